import ArgumentParser
import CLVSLinux
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import LVSLinux
import LVSPacket
import LVSRealServer

@main
struct RealServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvs-realserver",
        abstract: "What a real server behind lvsd needs: DR addresses, tunnel decapsulation, TOA, a test server.",
        subcommands: [DRSetup.self, Tunnel.self, TOAService.self, Serve.self])
}

// MARK: helpers

func sh(_ args: [String]) -> Int32 {
    var pid: pid_t = 0
    let argv = args.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    guard posix_spawnp(&pid, args[0], nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return (status >> 8) & 0xFF
}

/// `ip addr add|del` of a host address (/32 or /128) on `device`: ip's exit status.
func address(_ a: IPAddress, _ verb: String, device: String) -> Int32 {
    sh(["ip", a.isIPv6 ? "-6" : "-4", "addr", verb, "\(a)/\(a.isIPv6 ? 128 : 32)", "dev", device])
}

func sysctl(_ path: String, _ value: String) {
    guard let f = fopen("/proc/sys/" + path.replacingDots(), "w") else { return }
    fputs(value, f)
    fclose(f)
}

extension String {
    func replacingDots() -> String { String(map { $0 == "." ? "/" : $0 }) }
}

func fail(_ message: String) -> Never {
    var m = message + "\n"
    m.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func readText(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var buffer = [CChar](repeating: 0, count: 256)
    guard fgets(&buffer, Int32(buffer.count), f) != nil else { return nil }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func say(_ message: String) {
    var m = message + "\n"
    m.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

/// Blocks until SIGTERM or SIGINT.
func waitForStop() {
    let stop = DispatchSemaphore(value: 0)
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { stop.signal() }
        s.resume()
        sources.append(s)
    }
    stop.wait()
    _ = sources
}

func thread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable { let f: @Sendable () -> Void; init(_ f: @escaping @Sendable () -> Void) { self.f = f } }
    var t = pthread_t()
    pthread_create(&t, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().f()
        return nil
    }, Unmanaged.passRetained(Box(body)).toOpaque())
    pthread_detach(t)
}

// MARK: dr-setup

struct DRSetup: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dr-setup",
        abstract: "Puts each VIP on lo and stops the kernel answering ARP for it (arp_ignore=1, arp_announce=2), for DR.")
    @Argument(help: "The virtual addresses.") var vips: [String]
    @Flag(help: "Remove the VIPs instead.") var remove = false

    func run() throws {
        for v in vips {
            guard let a = IPAddress(v) else { fail("lvs-realserver: not an address: \(v)") }
            let rc = address(a, remove ? "del" : "add", device: "lo")
            if rc != 0 && !remove { fail("lvs-realserver: ip addr add \(a) dev lo failed (\(rc))") }
        }
        if !remove {
            for conf in ["all", "lo"] {
                sysctl("net.ipv4.conf.\(conf).arp_ignore", "1")
                sysctl("net.ipv4.conf.\(conf).arp_announce", "2")
            }
        }
        say(remove ? "removed \(vips.joined(separator: " "))" : "DR ready for \(vips.joined(separator: " "))")
    }
}

// MARK: tunnel

struct Tunnel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accepts IPIP (and IPv6-in-IP) and GUE for the VIPs: in the kernel's ipip where it has one, else with a BPF decapsulator (tc, else XDP), else through a TUN device.",
        discussion: """
            Runs until SIGTERM. The BPF decapsulator strips the outer headers of tunnel packets for the VIPs as they \
            arrive (at tc ingress, or in XDP) and the kernel takes the inner packets as if they had come bare (the VIPs \
            go on lo, as for DR). The TUN device is the slow way: a userspace loop reads each packet from a raw socket \
            and writes it to the device. Either way reverse-path filtering is loosened and replies leave by the normal route.
            """)
    @Argument(help: "The virtual addresses.") var vips: [String]
    @Option(help: "Also accept GUE on this UDP port.") var guePort: UInt16?
    @Option(help: "Decapsulate with: kernel (ipip, tunl0), tc, xdp or tun. Default: kernel where it has ipip and every VIP is IPv4 without GUE, else tc, else xdp, else tun.")
    var decapsulator: Decapsulator?
    @Option(help: ArgumentHelp("An interface for the BPF decapsulator, repeatable (default: every interface that is up but lo).", valueName: "name"))
    var interface: [String] = []
    @Option(help: "The TUN device's name.") var device = "lvstun0"

    enum Decapsulator: String, ExpressibleByArgument, CaseIterable { case kernel, tc, xdp, tun }

    func run() throws {
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
            runInKernel(addresses)
        case .tc, .xdp:
            let tc = decapsulator == .tc
            if let reason = runBPF(addresses, tc: tc) { fail("lvs-realserver: \(tc ? "tc" : "XDP") decapsulator: \(reason)") }
        case .tun:
            runTUN(addresses)
        case nil:
            if guePort == nil && ipv4Only && kernelHasIPIP() { return runInKernel(addresses) }
            guard let tcReason = runBPF(addresses, tc: true) else { return }
            say("tc decapsulator unavailable, trying XDP: \(tcReason)")
            guard let xdpReason = runBPF(addresses, tc: false) else { return }
            say("XDP decapsulator unavailable, using a TUN device: \(xdpReason)")
            runTUN(addresses)
        }
    }

    /// Until SIGTERM with the BPF decapsulator (at tc ingress or in XDP) on
    /// every interface; the reason when it cannot attach (then nothing stays
    /// attached).
    func runBPF(_ addresses: [IPAddress], tc: Bool) -> String? {
        let names = interface.isEmpty ? upInterfaces().filter { $0 != "lo" && $0 != device } : interface
        guard !names.isEmpty else { return "no interface" }
        var programs: [BPFProgram] = []
        var modes: [String] = []
        do {
            let map = try BPFAddressMap(capacity: max(16, addresses.count))
            for a in addresses { try map.set(a, flags: 1) }
            for name in names {
                let index = Int32(if_nametoindex(name))
                guard index > 0 else { return "no interface \(name)" }
                let program = try BPFProgram.decapsulator(vips: map, guePort: guePort ?? 0, tc: tc, attachTo: index)
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
        say("decapsulating for \(vips.joined(separator: " ")) \(tc ? "at tc ingress" : "by XDP") on \(modes.joined(separator: ", "))" + (guePort.map { ", GUE on \($0)" } ?? ""))
        waitForStop()
        programs = []
        for a in added { _ = address(a, "del", device: "lo") }
        return nil
    }

    /// The interfaces that are up.
    func upInterfaces() -> [String] {
        guard let list = if_nameindex() else { return [] }
        defer { if_freenameindex(list) }
        var names: [String] = []
        var k = 0
        while list[k].if_index != 0, let name = list[k].if_name {
            let text = String(cString: name)
            if let flags = readText("/sys/class/net/\(text)/flags"), let value = Int(flags.dropFirst(2).prefix { $0.isHexDigit }, radix: 16),
               value & IFF_UP != 0 {
                names.append(text)
            }
            k += 1
        }
        return names
    }

    /// Until SIGTERM: a raw socket per tunnel protocol (and a UDP socket for
    /// GUE) read in userspace, each inner packet written to a TUN device.
    func runTUN(_ addresses: [IPAddress]) {
        let tun = lvs_tun_open(device)
        guard tun >= 0 else { fail("lvs-realserver: cannot open a TUN device: \(String(cString: strerror(-tun)))") }
        _ = sh(["ip", "link", "set", device, "up"])
        for a in addresses {
            _ = address(a, "add", device: device)
        }
        for conf in ["all", "default", device] { sysctl("net.ipv4.conf.\(conf).rp_filter", "0") }
        hideVIPsFromARP()
        var fds: [(Int32, Kind)] = []
        for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
            let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(proto))
            if fd >= 0 { fds.append((fd, .ipv4Outer)) }
        }
        for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
            let fd = socket(AF_INET6, Int32(SOCK_RAW.rawValue), Int32(proto))
            if fd >= 0 { fds.append((fd, .ipv6Outer)) }
        }
        if let guePort {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = guePort.bigEndian
            let rc = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { fail("lvs-realserver: cannot bind GUE port \(guePort): \(String(cString: strerror(errno)))") }
            fds.append((fd, .gue))
        }
        guard !fds.isEmpty else { fail("lvs-realserver: no raw sockets (need root)") }
        say("decapsulating for \(vips.joined(separator: " ")) into \(device)" + (guePort.map { ", GUE on \($0)" } ?? ""))
        let sockets = fds
        thread {
            var polls = sockets.map { pollfd(fd: $0.0, events: Int16(POLLIN), revents: 0) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                guard poll(&polls, nfds_t(polls.count), -1) > 0 else { continue }
                for (k, p) in polls.enumerated() where p.revents & Int16(POLLIN) != 0 {
                    let n = buffer.withUnsafeMutableBytes { recv(p.fd, $0.baseAddress, $0.count, 0) }
                    guard n > 0 else { continue }
                    let packet = buffer[0..<n]
                    let inner: ArraySlice<UInt8>?
                    switch sockets[k].1 {
                    case .ipv4Outer: inner = Decapsulation.innerOfIPv4(packet)
                    case .ipv6Outer: inner = packet
                    case .gue: inner = Decapsulation.innerOfGUE(packet)
                    }
                    guard let inner else { continue }
                    _ = inner.withUnsafeBytes { write(tun, $0.baseAddress, $0.count) }
                }
            }
        }
        waitForStop()
        for a in addresses { _ = address(a, "del", device: device) }
        close(tun)
    }

    func hideVIPsFromARP() {
        sysctl("net.ipv4.conf.all.arp_ignore", "1")
        sysctl("net.ipv4.conf.all.arp_announce", "2")
    }

    enum Kind { case ipv4Outer, ipv6Outer, gue }

    /// The kernel's ipip module (tunl0), when this kernel has one.
    func kernelHasIPIP() -> Bool {
        access("/sys/module/ipip", F_OK) == 0 || (sh(["modprobe", "-q", "ipip"]) == 0 && access("/sys/module/ipip", F_OK) == 0)
    }

    /// IPIP by the kernel: the VIPs on tunl0, reverse-path filtering off for it.
    func runInKernel(_ addresses: [IPAddress]) {
        _ = sh(["ip", "link", "set", "tunl0", "up"])
        for a in addresses { _ = address(a, "add", device: "tunl0") }
        for conf in ["all", "default", "tunl0"] { sysctl("net.ipv4.conf.\(conf).rp_filter", "0") }
        hideVIPsFromARP()
        say("decapsulating for \(vips.joined(separator: " ")) in the kernel (tunl0)")
        waitForStop()
        for a in addresses { _ = address(a, "del", device: "tunl0") }
    }
}

// MARK: toa

/// Captures TOA from TCP segments on `interface` (all when nil) into `table`.
func captureTOA(into table: TOATable, interface: String?) {
    var index: Int32 = 0
    if let interface {
        index = Int32(if_nametoindex(interface))
        guard index > 0 else { fail("lvs-realserver: no interface \(interface)") }
    }
    let fd = lvs_packet_socket(index)
    guard fd >= 0 else { fail("lvs-realserver: cannot capture (AF_PACKET): \(String(cString: strerror(-fd)))") }
    thread {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 54 else { continue }
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

struct TOAService: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "toa",
        abstract: "Learns the client address FULLNAT carries in TOA and answers who the real client of a connection is.",
        discussion: "Serve: `lvs-realserver toa` (until SIGTERM). Ask: `lvs-realserver toa --query PEER:PORT` prints CLIENT:PORT, as accept() showed the peer.")
    @Option(help: "Capture on this interface only.") var interface: String?
    @Option(help: "The query socket.") var socket = "/run/lvs-toa.sock"
    @Option(help: ArgumentHelp("Ask a running toa service for the client behind this peer.", valueName: "peer:port")) var query: String?

    func run() throws {
        if let query {
            guard parseEndpoint(query) != nil else { fail("lvs-realserver: not ADDRESS:PORT: \(query)") }
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in socket.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b } }
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            guard rc == 0 else { fail("lvs-realserver: no toa service at \(socket)") }
            var q = query + "\n"
            q.withUTF8 { _ = send(fd, $0.baseAddress, $0.count, 0) }
            var buffer = [UInt8](repeating: 0, count: 256)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            close(fd)
            let answer = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : "unknown\n"
            say(String(answer.dropLast()))
            if answer.hasPrefix("unknown") { throw ExitCode(1) }
            return
        }
        let table = TOATable()
        captureTOA(into: table, interface: interface)
        unlink(socket)
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in socket.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, listen(fd, 16) == 0 else { fail("lvs-realserver: cannot serve \(socket): \(String(cString: strerror(errno)))") }
        chmod(socket, 0o600)
        say("toa: serving \(socket)")
        let path = socket
        thread {
            while true {
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                var buffer = [UInt8](repeating: 0, count: 256)
                let n = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                var answer = "unknown\n"
                if n > 0, let (peer, port) = parseEndpoint(String(decoding: buffer[0..<n], as: UTF8.self).filter { !$0.isWhitespace }),
                   let client = table.client(peer: peer, peerPort: port) {
                    answer = "\(client)\n"
                }
                answer.withUTF8 { _ = send(c, $0.baseAddress, $0.count, 0) }
                close(c)
            }
        }
        waitForStop()
        unlink(path)
    }
}

// MARK: serve

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A tiny HTTP (or UDP) server answering its name, the peer it sees and, under FULLNAT, the client TOA names.")
    @Option(help: "The port to listen on.") var port: UInt16 = 80
    @Option(help: "The name to answer with.") var name = "rs"
    @Flag(help: "Answer UDP datagrams instead of HTTP.") var udp = false
    @Flag(help: "Look clients up in TOA (captures TCP options on every interface).") var toa = false

    func run() throws {
        let table = TOATable()
        if toa { captureTOA(into: table, interface: nil) }
        let name = self.name
        var listeners: [Int32] = []
        for family in [AF_INET6] {
            let fd = socket(family, Int32((udp ? SOCK_DGRAM : SOCK_STREAM).rawValue), 0)
            var one: Int32 = 1, zero: Int32 = 0
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(4))
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            let rc = withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            guard rc == 0 else { fail("lvs-realserver: cannot bind port \(port): \(String(cString: strerror(errno)))") }
            if !udp { listen(fd, 512) }
            listeners.append(fd)
        }
        let fd = listeners[0]
        say("serving \(udp ? "udp" : "http") on \(port) as \(name)")
        if udp {
            thread {
                var buffer = [UInt8](repeating: 0, count: 2048)
                while true {
                    var from = sockaddr_in6()
                    var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                    let n = buffer.withUnsafeMutableBytes { b in
                        withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &length) } }
                    }
                    guard n >= 0 else { continue }
                    let (peer, peerPort) = endpoint(from)
                    var reply = "\(name) peer=\(ClientAddress(address: peer, port: peerPort))\n"
                    reply.withUTF8 { r in
                        _ = withUnsafePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, r.baseAddress, r.count, 0, $0, length) } }
                    }
                }
            }
        } else {
            thread {
                while true {
                    var from = sockaddr_in6()
                    var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                    let c = withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(fd, $0, &length) } }
                    guard c >= 0 else { continue }
                    var local = sockaddr_in6()
                    var localLength = socklen_t(MemoryLayout<sockaddr_in6>.size)
                    _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(c, $0, &localLength) } }
                    let (peer, peerPort) = endpoint(from)
                    let (me, myPort) = endpoint(local)
                    thread {
                        var tv = timeval(tv_sec: 5, tv_usec: 0)
                        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                        var request: [UInt8] = []
                        var buffer = [UInt8](repeating: 0, count: 4096)
                        while request.count < 65536 {
                            let n = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                            if n <= 0 { break }
                            request += buffer[0..<n]
                            if request.count >= 4 && request.suffix(4) == [13, 10, 13, 10] { break }
                        }
                        var body = "\(name) peer=\(ClientAddress(address: peer, port: peerPort))"
                        if let client = table.client(peer: peer, peerPort: peerPort, local: me, localPort: myPort) { body += " client=\(client)" }
                        body += "\n"
                        var response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
                        response.withUTF8 { _ = send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        close(c)
                    }
                }
            }
        }
        waitForStop()
    }
}

/// An address from a dual-stack socket, IPv4-mapped ones as IPv4.
func endpoint(_ sin6: sockaddr_in6) -> (IPAddress, UInt16) {
    var a = sin6.sin6_addr
    let bytes = withUnsafeBytes(of: &a) { Array($0) }
    let port = UInt16(bigEndian: sin6.sin6_port)
    if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
        return (.v4(IPv4Address(bytes[12], bytes[13], bytes[14], bytes[15])), port)
    }
    let high = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, low = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    return (.v6(IPv6Address(high: high, low: low)), port)
}
