// swift-tools-version:6.1
import PackageDescription

// Engine benchmarks, kept out of the main package so that its tests build
// without the benchmark harness. Run: cd Benchmarks && swift package benchmark
let package = Package(
    name: "swift-lvs-benchmarks",
    dependencies: [
        .package(name: "swift-lvs", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(name: "DirectorFixtures", dependencies: [.product(name: "LVSCore", package: "swift-lvs")], path: "Sources/DirectorFixtures"),
        .executableTarget(
            name: "DirectorBenchmarks",
            dependencies: [
                "DirectorFixtures",
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/DirectorBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // Runs one scenario N times, for instruction counts under callgrind; counts the hot path's allocations.
        .executableTarget(name: "lvs-bench-probe", dependencies: ["DirectorFixtures", "CAllocationCounter"], path: "Sources/lvs-bench-probe"),
        // Interposes malloc in the probe to count allocations, as SwiftNIO's allocation-counter tests do.
        .target(name: "CAllocationCounter", path: "Sources/CAllocationCounter"),
    ]
)
