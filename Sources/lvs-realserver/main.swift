import ArgumentParser
import LVSLinux
import LVSPacket
import LVSRealServer
import LVSSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

@main
struct RealServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvs-realserver",
        abstract: "What a real server behind lvsd needs: DR addresses, tunnel decapsulation, TOA, a test server.",
        subcommands: [DRSetup.self, Tunnel.self, TOAService.self, Serve.self])
}

// MARK: helpers

/// `ip` with `arguments`; its exit status (127 when it cannot start).
@discardableResult
func ip(_ arguments: [String]) -> Int32 {
    ChildProcess.run("ip", arguments, timeout: 10, options: .init(searchPath: true)).status ?? 128
}

/// `ip addr add|del` of a host address (/32 or /128) on `device`: ip's exit status.
@discardableResult
func address(_ a: IPAddress, _ verb: String, device: String) -> Int32 {
    ip([a.isIPv6 ? "-6" : "-4", "addr", verb, "\(a)/\(a.isIPv6 ? 128 : 32)", "dev", device])
}

/// Sets a sysctl, saying so when the kernel refuses (a missing interface's knob).
func sysctl(_ name: String, _ value: String) {
    do { try KernelFile.setSysctl(name, value) } catch { say("lvs-realserver: \(error)") }
}

func fail(_ message: String) -> Never {
    StandardStream.error.write(message + "\n")
    exit(1)
}

func say(_ message: String) { StandardStream.output.write(message + "\n") }

func warn(_ message: String) { StandardStream.error.write(message + "\n") }

/// SIGTERM and SIGINT, trapped before any thread starts (a thread started
/// earlier could take one with its default action and end the process
/// without its clean-up).
func stopSignals() -> SignalEvents { SignalEvents([SIGTERM, SIGINT]) }

/// Until SIGTERM or SIGINT.
func waitForStop(_ signals: SignalEvents) async {
    for await _ in signals { return }
}

// MARK: dr-setup

struct DRSetup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dr-setup",
        abstract: "Puts each VIP on lo and stops the kernel answering ARP for it (arp_ignore=1, arp_announce=2), for DR.")
    @Argument(help: "The virtual addresses.") var vips: [String]
    @Flag(help: "Remove the VIPs instead.") var remove = false
    @Option(
        help: ArgumentHelp(
            "Put the VIPs on this device instead of lo, a dummy device (or a bridge) made if there is none: for a userspace stack that sends from no loopback address (usrsctp).",
            valueName: "name"))
    var device = "lo"

    func run() throws {
        if !remove && device != "lo" && ip(["link", "show", "dev", device]) != 0 {
            // A kernel without the dummy driver has a bridge, which without ports does as well.
            guard ip(["link", "add", device, "type", "dummy"]) == 0 || ip(["link", "add", device, "type", "bridge"]) == 0,
                ip(["link", "set", device, "up"]) == 0
            else { fail("lvs-realserver: cannot make a dummy (or bridge) device \(device)") }
        }
        for v in vips {
            guard let a = IPAddress(v) else { fail("lvs-realserver: not an address: \(v)") }
            let rc = address(a, remove ? "del" : "add", device: device)
            if rc != 0 && !remove { fail("lvs-realserver: ip addr add \(a) dev \(device) failed (\(rc))") }
        }
        if !remove {
            for conf in ["all", device] {
                sysctl("net.ipv4.conf.\(conf).arp_ignore", "1")
                sysctl("net.ipv4.conf.\(conf).arp_announce", "2")
            }
        }
        say(remove ? "removed \(vips.joined(separator: " "))" : "DR ready for \(vips.joined(separator: " "))")
    }
}

// MARK: tunnel

struct Tunnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Accepts IPIP (and IPv6-in-IP) and GUE for the VIPs: in the kernel's ipip where it has one, else with a BPF decapsulator (tc, else XDP), else through a TUN device.",
        discussion: """
            Runs until SIGTERM. The BPF decapsulator strips the outer headers of tunnel packets for the VIPs as they \
            arrive (at tc ingress, or in XDP) and the kernel takes the inner packets as if they had come bare (the VIPs \
            go on lo, as for DR). The TUN device is the slow way: a userspace loop reads each packet from a raw socket \
            and writes it to the device. Either way reverse-path filtering is loosened and replies leave by the normal route.
            """)
    @Argument(help: "The virtual addresses.") var vips: [String]
    @Option(help: "Also accept GUE on this UDP port.") var guePort: UInt16?
    @Option(
        help:
            "Decapsulate with: kernel (ipip, tunl0), tc, xdp or tun. Default: kernel where it has ipip and every VIP is IPv4 without GUE, else tc, else xdp, else tun."
    )
    var decapsulator: Decapsulator?
    @Option(help: ArgumentHelp("An interface for the BPF decapsulator, repeatable (default: every interface that is up but lo).", valueName: "name"))
    var interface: [String] = []
    @Option(help: "The TUN device's name.") var device = "lvstun0"

    enum Decapsulator: String, ExpressibleByArgument, CaseIterable { case kernel, tc, xdp, tun }

    func run() async throws {
        let stop = stopSignals()
        let addresses = vips.map { v in
            guard let a = IPAddress(v) else { fail("lvs-realserver: not an address: \(v)") }
            return a
        }
        // tunl0 carries IPv4 only; IPv6 inside a tunnel needs sit or ip6tnl, which the BPF decapsulator covers.
        let ipv4Only = addresses.allSatisfy { !$0.isIPv6 }
        switch decapsulator {
        case .kernel:
            guard guePort == nil else { fail("lvs-realserver: the kernel's ipip does not take GUE; use --decapsulator tc, xdp or tun") }
            guard ipv4Only else { fail("lvs-realserver: the kernel's ipip (tunl0) takes IPv4 VIPs only; use --decapsulator tc, xdp or tun") }
            guard kernelHasIPIP() else { fail("lvs-realserver: this kernel has no ipip module") }
            await runInKernel(addresses, until: stop)
        case .tc, .xdp:
            let tc = decapsulator == .tc
            if let reason = await runBPF(addresses, tc: tc, until: stop) { fail("lvs-realserver: \(tc ? "tc" : "XDP") decapsulator: \(reason)") }
        case .tun:
            await runTUN(addresses, until: stop)
        case nil:
            if guePort == nil && ipv4Only && kernelHasIPIP() { return await runInKernel(addresses, until: stop) }
            guard let tcReason = await runBPF(addresses, tc: true, until: stop) else { return }
            say("tc decapsulator unavailable, trying XDP: \(tcReason)")
            guard let xdpReason = await runBPF(addresses, tc: false, until: stop) else { return }
            say("XDP decapsulator unavailable, using a TUN device: \(xdpReason)")
            await runTUN(addresses, until: stop)
        }
    }

    /// Until SIGTERM with the BPF decapsulator (at tc ingress or in XDP) on
    /// every interface; the reason when it cannot attach (then nothing stays
    /// attached).
    func runBPF(_ addresses: [IPAddress], tc: Bool, until stop: SignalEvents) async -> String? {
        let names = interface.isEmpty ? upInterfaces().filter { $0 != "lo" && $0 != device } : interface
        guard !names.isEmpty else { return "no interface" }
        var programs: [BPFProgram] = []
        var modes: [String] = []
        do {
            let map = try BPFAddressMap(capacity: max(16, addresses.count))
            for a in addresses { try map.set(a, flags: 1) }
            for name in names {
                guard let index = NetworkInterface.index(named: name) else { return "no interface \(name)" }
                let program = try BPFProgram.decapsulator(vips: map, guePort: guePort ?? 0, tc: tc, attachTo: Int32(index))
                programs.append(program)
                modes.append(tc ? name : "\(name) (\(program.attachment ?? "-"))")
            }
        } catch {
            return "\(error)"
        }
        let added = addresses.filter { a in
            address(a, "add", device: "lo") == 0
        }
        for conf in ["all", "default"] + names { sysctl("net.ipv4.conf.\(conf).rp_filter", "0") }
        hideVIPsFromARP()
        say(
            "decapsulating for \(vips.joined(separator: " ")) \(tc ? "at tc ingress" : "by XDP") on \(modes.joined(separator: ", "))"
                + (guePort.map { ", GUE on \($0)" } ?? ""))
        await waitForStop(stop)
        programs = []
        for a in added { address(a, "del", device: "lo") }
        return nil
    }

    /// The interfaces that are up (IFF_UP in /sys/class/net/NAME/flags).
    func upInterfaces() -> [String] {
        let names = KernelFile.directory("/sys/class/net") ?? []
        return names.sorted().filter { name in
            guard let flags = KernelFile.firstLine("/sys/class/net/\(name)/flags"), let value = Int(flags.dropFirst(2), radix: 16) else { return false }
            return value & Int(IFF_UP) != 0
        }
    }

    /// Until SIGTERM: a raw socket per tunnel protocol (and a UDP socket for
    /// GUE) read in userspace, each inner packet written to a TUN device.
    func runTUN(_ addresses: [IPAddress], until stop: SignalEvents) async {
        let tun: FileDescriptor
        do { tun = try TUNDevice.open(device) } catch { fail("lvs-realserver: \(error)") }
        ip(["link", "set", device, "up"])
        for a in addresses { address(a, "add", device: device) }
        for conf in ["all", "default", device] { sysctl("net.ipv4.conf.\(conf).rp_filter", "0") }
        hideVIPsFromARP()
        var sockets: [(Socket, Kind)] = []
        for (family, kind) in [(AF_INET, Kind.ipv4Outer), (AF_INET6, .ipv6Outer)] {
            for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
                if let s = try? Socket.open(family: family, type: Socket.raw, protocol: Int32(proto)) { sockets.append((s, kind)) }
            }
        }
        if let guePort {
            do {
                let s = try Socket.open(family: AF_INET, type: Socket.datagram)
                try s.bind(.ipv4(IPv4Address(0), port: guePort))
                sockets.append((s, .gue))
            } catch {
                fail("lvs-realserver: cannot take GUE port \(guePort): \(error)")
            }
        }
        guard !sockets.isEmpty else { fail("lvs-realserver: no raw sockets (need root)") }
        say("decapsulating for \(vips.joined(separator: " ")) into \(device)" + (guePort.map { ", GUE on \($0)" } ?? ""))
        for (socket, kind) in sockets {
            OSThread.detached(name: "tun-\(kind)") {
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    guard let n = try? socket.receive(into: &buffer), n > 0 else { continue }
                    let packet = buffer[0..<n]
                    let inner: ArraySlice<UInt8>?
                    switch kind {
                    case .ipv4Outer: inner = Decapsulation.innerOfIPv4(packet)
                    case .ipv6Outer: inner = packet
                    case .gue: inner = Decapsulation.innerOfGUE(packet)
                    }
                    guard let inner else { continue }
                    // A packet the device refuses is lost, as on any link.
                    _ = try? tun.writeAll(inner)
                }
            }
        }
        await waitForStop(stop)
        for a in addresses { address(a, "del", device: device) }
        try? tun.close()
    }

    func hideVIPsFromARP() {
        sysctl("net.ipv4.conf.all.arp_ignore", "1")
        sysctl("net.ipv4.conf.all.arp_announce", "2")
    }

    enum Kind: String {
        case ipv4Outer = "ipv4"
        case ipv6Outer = "ipv6"
        case gue
    }

    /// The kernel's ipip module (tunl0), when this kernel has one.
    func kernelHasIPIP() -> Bool {
        if KernelFile.exists("/sys/module/ipip") { return true }
        let loaded = ChildProcess.run("modprobe", ["-q", "ipip"], timeout: 10, options: .init(searchPath: true)).status == 0
        return loaded && KernelFile.exists("/sys/module/ipip")
    }

    /// IPIP by the kernel: the VIPs on tunl0, reverse-path filtering off for it.
    func runInKernel(_ addresses: [IPAddress], until stop: SignalEvents) async {
        ip(["link", "set", "tunl0", "up"])
        for a in addresses { address(a, "add", device: "tunl0") }
        for conf in ["all", "default", "tunl0"] { sysctl("net.ipv4.conf.\(conf).rp_filter", "0") }
        hideVIPsFromARP()
        say("decapsulating for \(vips.joined(separator: " ")) in the kernel (tunl0)")
        await waitForStop(stop)
        for a in addresses { address(a, "del", device: "tunl0") }
    }
}

// MARK: toa

/// Captures TOA from TCP segments on `interface` (all when nil) into `table`.
func captureTOA(into table: TOATable, interface: String?) {
    var index: Int32 = 0
    if let interface {
        guard let i = NetworkInterface.index(named: interface) else { fail("lvs-realserver: no interface \(interface)") }
        index = Int32(i)
    }
    let capture: Socket
    do {
        capture = try Socket.open(family: AF_PACKET, type: Socket.raw, protocol: Int32(SocketAddress.everyEtherType.bigEndian))
        try capture.bind(.link(interface: index))
    } catch {
        fail("lvs-realserver: cannot capture (AF_PACKET): \(error)")
    }
    OSThread.detached(name: "toa-capture") {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            guard let n = try? capture.receive(into: &buffer), n > 54 else { continue }
            if let (key, client) = TOA.parse(frame: Array(buffer[0..<n])) { table.record(key, client) }
        }
    }
}

func parseEndpoint(_ text: String) -> (IPAddress, UInt16)? {
    var host = Substring(text)
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        host = text[text.index(after: text.startIndex)..<close]
        guard let port = UInt16(text[text.index(after: close)...].dropFirst()), let a = IPAddress(host) else { return nil }
        return (a, port)
    }
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), let a = IPAddress(text[..<colon]) else { return nil }
    return (a, port)
}

struct TOAService: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toa",
        abstract: "Gives applications on this real server the client FULLNAT carries in TOA, as toa.ko did, without a kernel module.",
        discussion: """
            Serve: `lvs-realserver toa` (until SIGTERM) attaches BPF programs to a cgroup (the root of the cgroup v2 \
            hierarchy unless `--cgroup`): for its sockets, accept() and getpeername() report the client a FULLNAT \
            director carried in TCP option 254, so unmodified applications (nginx's $remote_addr) see it. A \
            connection without TOA, or with a malformed one, keeps its peer. Where BPF cannot be had (or with \
            `--capture`), it captures TCP options instead and only the query socket knows clients. \
            Ask: `lvs-realserver toa --query PEER:PORT` prints CLIENT:PORT for the peer as the kernel knows it.
            """)
    @Option(help: "The cgroup (v2 directory) whose sockets see their clients; the hierarchy's root by default.") var cgroup: String?
    @Flag(help: "Capture TCP options instead of attaching BPF programs (only the query socket knows clients).") var capture = false
    @Option(help: "With --capture, capture on this interface only.") var interface: String?
    @Option(help: "The query socket.") var socket = "/run/lvs-toa.sock"
    @Option(help: ArgumentHelp("Ask a running toa service for the client behind this peer.", valueName: "peer:port")) var query: String?

    func run() async throws {
        guard SocketAddress.unixPathFits(socket) else { fail("lvs-realserver: socket path too long: \(socket)") }
        if let query {
            guard parseEndpoint(query) != nil else { fail("lvs-realserver: not ADDRESS:PORT: \(query)") }
            var buffer = [UInt8](repeating: 0, count: 256)
            let n: Int
            do {
                let c = try Socket.open(family: AF_UNIX, type: Socket.stream)
                defer { c.close() }
                try c.connect(.unix(socket))
                try c.sendAll(Array((query + "\n").utf8))
                n = try c.receive(into: &buffer) ?? 0
            } catch {
                fail("lvs-realserver: no toa service at \(socket): \(error)")
            }
            let answer = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : "unknown\n"
            say(String(answer.dropLast()))
            if answer.hasPrefix("unknown") { throw ExitCode(1) }
            return
        }
        if interface != nil && !capture { fail("lvs-realserver: --interface is for --capture") }
        let stop = stopSignals()
        let lookup: @Sendable (IPAddress, UInt16) -> ClientAddress?
        var programs: TOAPrograms? = nil
        if !capture {
            let fallback = "capturing TCP options instead: only the query socket knows clients"
            if let path = cgroup ?? KernelFile.cgroup2Root() {
                if !KernelFile.isCgroup2(path) {
                    warn(
                        "lvs-realserver: toa: \(path) is not in a cgroup v2 hierarchy (mount one: mount -t cgroup2 none DIR, and name a directory of it with --cgroup); \(fallback)"
                    )
                } else {
                    do {
                        programs = try TOAPrograms.attach(cgroup: path)
                        say("toa: BPF programs attached to cgroup \(path): accept() and getpeername() report the client TOA carries")
                    } catch {
                        warn("lvs-realserver: toa: BPF unavailable (\(error)); \(fallback)")
                    }
                }
            } else {
                warn("lvs-realserver: toa: no cgroup v2 hierarchy is mounted (name one with --cgroup); \(fallback)")
            }
        }
        if let programs {
            lookup = { programs.client(peer: $0, port: $1).map { ClientAddress(address: $0.0, port: $0.1) } }
        } else {
            let table = TOATable()
            captureTOA(into: table, interface: interface)
            // The capture races the connection: a question waits a little for its ACK.
            lookup = { table.client(peer: $0, peerPort: $1, waitingUpTo: 500) }
        }
        FileSystem.remove(socket)
        let listener: Socket
        do {
            listener = try Socket.open(family: AF_UNIX, type: Socket.stream)
            try listener.bind(.unix(socket))
            try listener.listen(backlog: 16)
        } catch {
            fail("lvs-realserver: cannot serve \(socket): \(error)")
        }
        do { try FileSystem.setPermissions(socket, 0o600) } catch { fail("lvs-realserver: \(error)") }
        say("toa: serving \(socket)")
        OSThread.detached(name: "toa-queries") {
            while true {
                guard let c = try? listener.accept() else { continue }
                var buffer = [UInt8](repeating: 0, count: 256)
                var answer = "unknown\n"
                if let n = try? c.receive(into: &buffer), n > 0,
                    let (peer, port) = parseEndpoint(String(decoding: buffer[0..<n], as: UTF8.self).filter { !$0.isWhitespace }),
                    let client = lookup(peer, port)
                {
                    answer = "\(client)\n"
                }
                try? c.sendAll(Array(answer.utf8))
                c.close()
            }
        }
        await waitForStop(stop)
        if let programs {
            let n = programs.counters()
            say("toa: \(n.found) connections with TOA, \(n.none) without, \(n.malformed) malformed; \(n.answered) answers rewritten")
        }
        FileSystem.remove(socket)
        withExtendedLifetime(programs) {}
    }
}

// MARK: serve

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A tiny HTTP (or UDP) server answering its name, the peer it sees and, under FULLNAT, the client TOA names.")
    @Option(help: "The port to listen on.") var port: UInt16 = 80
    @Option(help: "The name to answer with.") var name = "rs"
    @Flag(help: "Answer UDP datagrams instead of HTTP.") var udp = false
    @Flag(help: "Look clients up in TOA (captures TCP options on every interface).") var toa = false

    func run() async throws {
        let stop = stopSignals()
        let table = TOATable()
        if toa { captureTOA(into: table, interface: nil) }
        let name = self.name
        // One dual-stack socket: IPv4 clients arrive as IPv4-mapped addresses.
        let listener: Socket
        do {
            listener = try Socket.open(family: AF_INET6, type: udp ? Socket.datagram : Socket.stream)
            try listener.setFlag(level: SOL_SOCKET, name: SO_REUSEADDR, true, "SO_REUSEADDR")
            try listener.setFlag(level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, false, "IPV6_V6ONLY")
            try listener.bind(.ipv6(IPv6Address(high: 0, low: 0), port: port, scope: 0))
            if !udp { try listener.listen(backlog: 512) }
        } catch {
            fail("lvs-realserver: cannot serve port \(port): \(error)")
        }
        say("serving \(udp ? "udp" : "http") on \(port) as \(name)")
        if udp {
            OSThread.detached(name: "serve-udp") {
                var buffer = [UInt8](repeating: 0, count: 2048)
                while true {
                    guard let (_, from) = try? listener.receiveFrom(into: &buffer, dontWait: false), let from,
                        let (peer, peerPort) = from.endpoint
                    else { continue }
                    let reply = "\(name) peer=\(ClientAddress(address: peer, port: peerPort))\n"
                    _ = try? listener.send(Array(reply.utf8), to: from)
                }
            }
        } else {
            OSThread.detached(name: "serve-accept") {
                while true {
                    guard let c = try? listener.accept() else { continue }
                    OSThread.detached(name: "serve-conn") { answer(c, name: name, table: table) }
                }
            }
        }
        await waitForStop(stop)
    }
}

/// One HTTP exchange: reads the request (5 s at most), answers who asked.
func answer(_ c: Socket, name: String, table: TOATable) {
    defer { c.close() }
    guard let (peer, peerPort) = (try? c.peerAddress())?.endpoint, let (me, myPort) = (try? c.localAddress())?.endpoint else { return }
    try? c.setTimeouts(seconds: 5)
    var request: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while request.count < 65536 {
        guard let n = try? c.receive(into: &buffer), n > 0 else { break }
        request += buffer[0..<n]
        if request.count >= 4 && request.suffix(4) == [13, 10, 13, 10] { break }
    }
    var body = "\(name) peer=\(ClientAddress(address: peer, port: peerPort))"
    if let client = table.client(peer: peer, peerPort: peerPort, local: me, localPort: myPort, waitingUpTo: 500) { body += " client=\(client)" }
    body += "\n"
    let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    try? c.sendAll(Array(response.utf8))
}
