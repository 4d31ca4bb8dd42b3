// swift-tools-version:6.2
import PackageDescription

// LVSPacket and LVSCore are the data plane: strict memory safety makes every
// `unsafe` in them visible and reviewable.
let strict: [SwiftSetting] = [.strictMemorySafety()]

let package = Package(
    name: "swift-lvs",
    products: [
        .library(name: "LVSPacket", targets: ["LVSPacket"]),
        .library(name: "LVSCore", targets: ["LVSCore"]),
    ],
    targets: [
        .target(name: "LVSPacket", swiftSettings: strict),
        .target(name: "LVSCore", dependencies: ["LVSPacket"], swiftSettings: strict),
        // libFuzzer entry point: swift build -c release -Xswiftc -sanitize=fuzzer,address --product lvs-fuzz-director
        .executableTarget(name: "lvs-fuzz-director", dependencies: ["LVSCore"], path: "Sources/LVSFuzz"),
        // Builds test frames with checksums computed independently of LVSPacket.
        .target(name: "LVSTestSupport", dependencies: ["LVSPacket"], path: "Tests/LVSTestSupport"),
        .testTarget(name: "LVSPacketTests", dependencies: ["LVSPacket", "LVSTestSupport"]),
        .testTarget(name: "LVSCoreTests", dependencies: ["LVSCore", "LVSTestSupport"]),
    ]
)
