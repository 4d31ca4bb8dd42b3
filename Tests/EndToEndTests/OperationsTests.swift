import Foundation
import LVSLab
import LVSTestSupport
import Testing

/// What an operator watches and asks: `lvsadm trace` on live traffic.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct OperationsTests {
    static let bin = Executables.directory

    /// Runs `lvsadm trace ARGS` while `traffic` runs; its output once it has
    /// printed what it was asked for (or waited 10 s).
    func trace(_ lab: Lab, _ args: [String], name: String, traffic: () throws -> Void) throws -> String {
        let p = try lab.start("d", [Self.bin.appendingPathComponent("lvsadm").path, "trace", "--socket", lab.socket, "--wait", "10"] + args,
                              logName: name)
        usleep(400_000)  // armed by its first poll
        try traffic()
        let deadline = Date().addingTimeInterval(12)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!p.isRunning && p.terminationStatus == 0, "\(lab.logText(name))")
        return lab.logText(name)
    }

    /// Sends one frame from the router onto the director's LAN, as is.
    func sendRaw(_ lab: Lab, _ frameHex: String) throws {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("br0", 0))
            s.send(bytes.fromhex(sys.argv[1]))
            """
        try lab.inside("rt", "python3", "-c", script, frameHex)
    }

    @Test func traceShowsWhatEachMethodChangesAndWhyAMalformedPacketDropped() throws {
        let lab = try Lab(prefix: "lttrace", bin: Self.bin)
        defer { lab.teardown() }
        try lab.startDirector()
        try lab.startNginx()
        for i in 1...3 {
            try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Lab.vip)
            try lab.startRealServerTool(i, ["tunnel", Lab.vip], logName: "tun\(i)")
        }
        let rs = "198\\.19\\.0\\.1[123]"
        func service(_ method: String, _ port: Int, rsPort: Int) throws {
            try lab.gateway(viaDirector: method == "-m")
            try lab.lvsadm("-C")
            try lab.lvsadm("-A -t \(Lab.vip):\(port) -s rr")
            if method == "-b" { try lab.lvsadm("--add-laddr -t \(Lab.vip):\(port) -z \(Lab.lip)") }
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):\(port) -r \(Lab.real(i)):\(rsPort) \(method)") }
        }
        func one(_ url: String) throws { _ = try lab.requests(url, count: 1) }
        func has(_ text: String, _ pattern: String) -> Bool { text.range(of: pattern, options: .regularExpression) != nil }

        try service("-m", 80, rsPort: 8080)
        let nat = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "1"], name: "trace-nat") { try one("http://\(Lab.vip)/") }
        #expect(has(nat, "TCP 198\\.18\\.0\\.100:[0-9]+ -> 198\\.19\\.0\\.10:80 \\[S\\]"), "\(nat)")
        #expect(has(nat, "new connection: rr chose \(rs):8080 \\(Masq\\), state SYN_RECV"), "\(nat)")
        #expect(has(nat, "ip\\.dst +198\\.19\\.0\\.10 -> \(rs)\n") && has(nat, "tcp\\.dport +80 -> 8080\n"), "\(nat)")
        #expect(has(nat, "ip\\.ttl +63 -> 62\n") && has(nat, "eth\\.dst ") && has(nat, "eth\\.src "), "\(nat)")

        try service("-g", 8080, rsPort: 8080)
        let dr = try trace(lab, ["-t", "\(Lab.vip):8080", "--count", "1"], name: "trace-dr") { try one("http://\(Lab.vip):8080/") }
        #expect(has(dr, "chose \(rs):8080 \\(Route\\)") && has(dr, "eth\\.dst +[0-9a-f:]+ -> [0-9a-f:]+\n"), "\(dr)")
        #expect(!has(dr, "ip\\.dst +") && !has(dr, "tcp\\.dport +"), "\(dr)")

        try service("-i", 8080, rsPort: 8080)
        let tun = try trace(lab, ["-t", "\(Lab.vip):8080", "--count", "1"], name: "trace-tun") { try one("http://\(Lab.vip):8080/") }
        #expect(has(tun, "chose \(rs):8080 \\(Tunnel\\)"), "\(tun)")
        #expect(has(tun, "outer\\.ip\\.src +- -> 198\\.19\\.0\\.1\n") && has(tun, "outer\\.ip\\.dst +- -> \(rs)\n"), "\(tun)")
        #expect(has(tun, "outer\\.ip\\.proto +- -> 4\n"), "\(tun)")

        try service("-b", 80, rsPort: 8080)
        // SYN, the real server's SYN-ACK, and the ACK that carries TOA.
        let fnat = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "3"], name: "trace-fnat") { try one("http://\(Lab.vip)/") }
        #expect(has(fnat, "chose \(rs):8080 \\(FullNat\\)"), "\(fnat)")
        #expect(has(fnat, "ip\\.src +198\\.18\\.0\\.100 -> 198\\.19\\.0\\.100\n"), "\(fnat)")
        #expect(has(fnat, "reply from \(rs):8080 \\(FullNat\\) of an existing connection"), "\(fnat)")
        #expect(has(fnat, "tcp\\.mss +1460 -> 1452\n"), "\(fnat)")
        #expect(has(fnat, "tcp\\.toa +- -> 198\\.18\\.0\\.100:[0-9]+\n"), "\(fnat)")

        // An IPv4 header with IHL 3, to the VIP.
        let dmac = try lab.inside("d", "cat", "/sys/class/net/\(lab.ns("d0"))/address").trimmingCharacters(in: .whitespacesAndNewlines)
        let frame = dmac.replacingOccurrences(of: ":", with: "") + "020000000001" + "0800"
            + "4300" + "0028" + "0000" + "4000" + "4006" + "0000" + "c6120064" + "c613000a" + String(repeating: "00", count: 20)
        let bad = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "1"], name: "trace-bad") { try sendRaw(lab, frame) }
        #expect(bad.contains("dropped: bad-ihl") && bad.contains("malformed: bad-ihl"), "\(bad)")
    }
}
