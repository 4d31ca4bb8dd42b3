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
        .library(name: "LVSControl", targets: ["LVSControl"]),
        .executable(name: "lvsd", targets: ["lvsd"]),
        .executable(name: "lvsadm", targets: ["lvsadm"]),
        .executable(name: "lvs-realserver", targets: ["lvs-realserver"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .target(name: "LVSPacket", swiftSettings: strict),
        .target(name: "LVSCore", dependencies: ["LVSPacket", "CLVSPrefetch"], swiftSettings: strict),
        // The connection-table prefetch of the fast path (Swift has none).
        .target(name: "CLVSPrefetch"),
        // Control plane: the service table, the ipvsadm command line and its
        // listings, config files, the control protocol and socket.
        .target(name: "LVSControl", dependencies: ["LVSCore", "CLVSLinux", .product(name: "Logging", package: "swift-log")]),
        // The Linux data plane: AF_PACKET rings, netlink, worker threads.
        .target(name: "LVSLinux", dependencies: ["LVSControl", "CLVSLinux", .product(name: "Logging", package: "swift-log")]),
        // lvsd's HTTP side: Prometheus metrics and the live status page.
        .target(name: "LVSStatus", dependencies: ["LVSControl", .product(name: "Prometheus", package: "swift-prometheus"),
                                                  .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                                                  .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log")]),
        // Director high availability: VRRP, tied to the sync daemons.
        .target(name: "LVSVRRP", dependencies: ["LVSControl", "CLVSLinux", .product(name: "Logging", package: "swift-log")]),
        // keepalived's checkers, run by lvsd.
        .target(name: "LVSHealth", dependencies: ["LVSControl", .product(name: "Logging", package: "swift-log"),
                                                  .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                                                  .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto")]),
        // The real server's side: TOA, tunnel decapsulation.
        .target(name: "LVSRealServer", dependencies: ["LVSPacket"]),
        .executableTarget(name: "lvs-realserver", dependencies: ["LVSRealServer", "CLVSLinux",
                                                                 .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // C only where Swift cannot import a header.
        .target(name: "CLVSLinux", linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf")]),
        .executableTarget(name: "lvsd", dependencies: ["LVSControl", "LVSLinux", "LVSStatus", "LVSHealth", "LVSVRRP", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                                       .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "lvsadm", dependencies: ["LVSControl", "LVSLab"]),
        // Namespaces, veths and processes for the demo and the end-to-end tests.
        .target(name: "LVSLab"),
        // libFuzzer entry point: swift build -c release -Xswiftc -sanitize=fuzzer,address --product lvs-fuzz-director
        .executableTarget(name: "lvs-fuzz-director", dependencies: ["LVSCore", "LVSFuzzDriver"], path: "Sources/LVSFuzz"),
        .target(name: "LVSFuzzDriver"),
        // libFuzzer entry point over the control protocol and config parsers.
        .executableTarget(name: "lvs-fuzz-control", dependencies: ["LVSControl", "LVSPacket", "LVSVRRP", "LVSFuzzDriver", .product(name: "Logging", package: "swift-log")],
                          path: "Sources/LVSFuzzControl"),
        // Builds test frames with checksums computed independently of LVSPacket.
        .target(name: "LVSTestSupport", dependencies: ["LVSPacket", "LVSCore"], path: "Tests/LVSTestSupport"),
        .testTarget(name: "LVSPacketTests", dependencies: ["LVSPacket", "LVSTestSupport"]),
        .testTarget(name: "LVSCoreTests", dependencies: ["LVSCore", "LVSTestSupport"]),
        .testTarget(name: "LVSControlTests", dependencies: ["LVSControl", "LVSStatus", "LVSHealth", "LVSVRRP", "LVSTestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["LVSLab", "LVSTestSupport"]),
    ]
)
