// swift-tools-version:6.2
import PackageDescription

// Modules by job, dependencies pointing down this list only (scripts/check-layers
// checks every import against it; the README's module table says what each holds):
//   packet → engine → system → Linux I/O → configuration → control protocol
//   → admin (lvsadm) | daemon (lvsd's services) → executables.
// Every module that touches raw memory builds with strict memory safety:
// each `unsafe` in it is visible and says why it is sound.
let strict: [SwiftSetting] = [.strictMemorySafety()]
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")

let package = Package(
    name: "swift-lvs",
    products: [
        .library(name: "LVSPacket", targets: ["LVSPacket"]),
        .library(name: "LVSCore", targets: ["LVSCore"]),
        .library(name: "LVSConfiguration", targets: ["LVSConfiguration"]),
        .executable(name: "lvsd", targets: ["lvsd"]),
        .executable(name: "lvsadm", targets: ["lvsadm"]),
        .executable(name: "lvs-realserver", targets: ["lvs-realserver"]),
        .executable(name: "lvs-demo", targets: ["lvs-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Packet: bounds-checked header views, checksums, rewrites, encapsulation,
        // and every frame lvsd writes itself (ARP, neighbour discovery, ICMP).
        .target(name: "LVSPacket", swiftSettings: strict),
        // The engine: services, schedulers, connections, forwarding; `Director`,
        // a worker's pipeline, deterministic (frames and a clock in, frames out).
        .target(name: "LVSCore", dependencies: ["LVSPacket", "CLVSPrefetch"], swiftSettings: strict),
        // The one C the engine uses: a cache prefetch (Swift has none).
        .target(name: "CLVSPrefetch"),
        // Typed system calls: sockets and their addresses, errors, netlink,
        // child processes, clocks, sd_notify.
        .target(
            name: "LVSSystem", dependencies: ["LVSPacket", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        // The data plane's I/O: AF_PACKET rings, AF_XDP, BPF programs, worker
        // threads, the kernel's view of links, addresses, routes and neighbours.
        .target(name: "LVSLinux", dependencies: ["LVSCore", "LVSSystem", "CLVSLinux", logging], swiftSettings: strict),
        // C where Swift cannot import a header: ring structures, sendmmsg,
        // AF_XDP sockets (libxdp) and BPF loading (libbpf).
        .target(name: "CLVSLinux", linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf")]),
        // What operators write: the service table with the kernel's checks,
        // ipvsadm's command line and rules files, keepalived.conf.
        .target(name: "LVSConfiguration", dependencies: ["LVSCore", "LVSSystem"], swiftSettings: strict),
        // What lvsadm and lvsd say to each other: requests, responses, snapshots.
        .target(name: "LVSControlProtocol", dependencies: ["LVSConfiguration", "LVSSystem"], swiftSettings: strict),
        // lvsadm: ipvsadm's commands and listings against lvsd's socket.
        .target(name: "LVSAdmin", dependencies: ["LVSControlProtocol", "LVSConfiguration", "LVSSystem"], swiftSettings: strict),
        // lvsd's control plane: the table it serves, the control socket, the
        // sync daemons, the passive check.
        .target(
            name: "LVSDaemon",
            dependencies: [
                "LVSControlProtocol", "LVSConfiguration", "LVSLinux", "LVSSystem", logging,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"), lifecycle,
            ],
            swiftSettings: strict),
        // Director high availability: VRRP, tied to the sync daemons.
        .target(
            name: "LVSVRRP",
            dependencies: [
                "LVSDaemon", "LVSConfiguration", "LVSControlProtocol", "LVSSystem", logging, lifecycle,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        // keepalived's checkers, run by lvsd.
        .target(
            name: "LVSHealth",
            dependencies: [
                "LVSDaemon", "LVSConfiguration", "LVSSystem", logging, lifecycle,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: strict),
        // lvsd's HTTP side: Prometheus metrics and the live status page.
        .target(
            name: "LVSStatus",
            dependencies: [
                "LVSDaemon", "LVSControlProtocol", "LVSSystem", lifecycle, .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), logging,
            ], swiftSettings: strict),
        // The real server's side: TOA, tunnel decapsulation.
        .target(name: "LVSRealServer", dependencies: ["LVSPacket", "LVSSystem"], swiftSettings: strict),
        // Namespaces, veths and processes for the demo and the end-to-end tests.
        .target(name: "LVSLab", dependencies: ["LVSSystem"], swiftSettings: strict),
        .executableTarget(
            name: "lvsd",
            dependencies: [
                "LVSDaemon", "LVSConfiguration", "LVSControlProtocol", "LVSCore", "LVSLinux", "LVSStatus", "LVSHealth", "LVSVRRP", "LVSSystem",
                .product(name: "NIOPosix", package: "swift-nio"), lifecycle,
                .product(name: "ArgumentParser", package: "swift-argument-parser"), logging,
            ], swiftSettings: strict),
        .executableTarget(name: "lvsadm", dependencies: ["LVSAdmin", "LVSSystem"], swiftSettings: strict),
        .executableTarget(
            name: "lvs-realserver",
            dependencies: [
                "LVSRealServer", "LVSLinux", "LVSSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(name: "lvs-demo", dependencies: ["LVSLab"], swiftSettings: strict),
        // libFuzzer entry points: swift build -c release -Xswiftc -sanitize=fuzzer,address --product lvs-fuzz-director
        .executableTarget(name: "lvs-fuzz-director", dependencies: ["LVSCore", "LVSFuzzDriver"], path: "Sources/LVSFuzz", swiftSettings: strict),
        .target(name: "LVSFuzzDriver", swiftSettings: strict),
        // Established flows through the fast path and the general path: identical frames out.
        .executableTarget(
            name: "lvs-fuzz-paths", dependencies: ["LVSCore", "LVSTestSupport", "LVSFuzzDriver"], path: "Sources/LVSFuzzPaths", swiftSettings: strict),
        // The control protocol, config parsers, trace decoding, sync and VRRP messages.
        .executableTarget(
            name: "lvs-fuzz-control", dependencies: ["LVSAdmin", "LVSDaemon", "LVSVRRP", "LVSFuzzDriver", logging],
            path: "Sources/LVSFuzzControl", swiftSettings: strict),
        // The state file loader: whole files, read and restored onto a director.
        .executableTarget(
            name: "lvs-fuzz-state",
            dependencies: ["LVSConfiguration", "LVSDaemon", "LVSFuzzDriver", logging, .product(name: "SystemPackage", package: "swift-system")],
            path: "Sources/LVSFuzzState", swiftSettings: strict),
        // Builds test frames with checksums computed independently of LVSPacket.
        .target(name: "LVSTestSupport", dependencies: ["LVSPacket", "LVSCore"], path: "Tests/LVSTestSupport", swiftSettings: strict),
        .testTarget(name: "LVSPacketTests", dependencies: ["LVSPacket", "LVSTestSupport"]),
        .testTarget(name: "LVSCoreTests", dependencies: ["LVSCore", "LVSTestSupport"]),
        .testTarget(name: "LVSSystemTests", dependencies: ["LVSSystem"]),
        .testTarget(name: "LVSLinuxTests", dependencies: ["LVSLinux", "CLVSLinux", "LVSTestSupport"]),
        .testTarget(name: "LVSAdminTests", dependencies: ["LVSAdmin", "LVSTestSupport"]),
        .testTarget(name: "LVSDaemonTests", dependencies: ["LVSDaemon", "LVSAdmin", "LVSStatus", "LVSHealth", "LVSVRRP", "LVSTestSupport", logging]),
        .testTarget(name: "EndToEndTests", dependencies: ["LVSLab", "LVSSystem", "LVSTestSupport"]),
    ]
)
