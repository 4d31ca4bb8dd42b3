import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// PROXY protocol through lvsd to unmodified servers that speak it: nginx
/// (`listen … proxy_protocol`) and HAProxy (`accept-proxy`), versions 1 and
/// 2, IPv4 and IPv6, FULLNAT and NAT.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct ProxyProtocolEndToEndTests {
    static let bin = Executables.directory

    /// A lab with nginx (its proxy_protocol listener on 8081) and HAProxy
    /// (`accept-proxy` on 8082 and 8083) on each real server, and lvsd unless
    /// the test starts it itself; removed afterwards whatever happens.
    func withLab(_ prefix: String, director: Bool, _ body: (Lab) throws -> Void) throws {
        let lab = try Lab(prefix: prefix, bin: Self.bin)
        defer { lab.teardown() }
        do {
            if director { try lab.startDirector() }
            try lab.startNginx()
            try lab.startHAProxy()
            try body(lab)
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }

    /// `count` requests, one connection each; the answers ("NAME ADDRESS PORT")
    /// that name the client and the port curl used, and those that do not.
    func requests(_ lab: Lab, _ url: String, client: String, count: Int) throws -> (right: Int, wrong: [String]) {
        let out = try lab.inside(
            "c",
            arguments: ["curl", "-sS", "-g", "--max-time", "120", "--connect-timeout", "5", "-H", "Connection: close", "-w", "%{local_port}\n"]
                + Array(repeating: url, count: count))
        let words = out.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        let answers = stride(from: 0, to: words.count, by: 4).map { Array(words[$0..<min($0 + 4, words.count)]) }
        let right = answers.filter { $0.count == 4 && $0[1] == client && $0[2] == $0[3] }
        return (right.count, answers.filter { !($0.count == 4 && $0[1] == client && $0[2] == $0[3]) }.prefix(5).map { $0.joined(separator: " ") })
    }

    /// A client that connects `count` times and waits (up to 5 s each) for
    /// the server's first line without sending anything; prints each line.
    static func bannerClient(_ address: String, _ port: Int, count: Int) -> String {
        """
        import socket
        for _ in range(\(count)):
            s = socket.create_connection(("\(address)", \(port)), timeout=5)
            try:
                print(s.makefile().readline().strip())
            except OSError as e:
                print("no banner:", e)
            s.close()
        """
    }

    /// Uploads the file and returns the answer ("stored" once nginx holds the whole body).
    func upload(_ lab: Lab, _ url: String, _ file: String) throws -> String {
        try lab.inside("c", "curl", "-sS", "-g", "--max-time", "120", "--data-binary", "@" + file, url).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The SHA-256 of every body the real servers' nginx kept.
    func storedDigests(_ lab: Lab) throws -> [String] {
        var digests: [String] = []
        for i in 1...3 {
            let dir = lab.directory.appendingPathComponent("nginx\(i)/uploads")
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] {
                let out = try Lab.exec(["sha256sum", dir.appendingPathComponent(name).path])
                digests.append(String(out.prefix(64)))
            }
            try? FileManager.default.removeItem(at: dir)
        }
        return digests
    }

    func service(_ lab: Lab, _ vip: String, port: Int, realPort: Int, version: String, method: String, v6: Bool) throws {
        try lab.lvsadm("-A -t \(vip):\(port) -s rr --proxy-protocol \(version)")
        if method == "-b" { try lab.lvsadm("--add-laddr -t \(vip):\(port) -z \(v6 ? Lab.lip6 : Lab.lip)") }
        for i in 1...3 { try lab.lvsadm("-a -t \(vip):\(port) -r \(v6 ? "[\(Lab.real6(i))]" : Lab.real(i)):\(realPort) \(method)") }
    }

    @Test func nginxAndHAProxyHearTheClientFromTheHeader() throws {
        try withLab("ltpp", director: true) { lab in
            let (file, digest) = try lab.randomFile("upload.bin", megabytes: 10)
            var uploads = 0
            for v6 in [false, true] {
                let vip = v6 ? "[\(Lab.vip6)]" : Lab.vip
                let client = v6 ? Lab.client6 : Lab.client
                for version in ["v1", "v2"] {
                    try lab.lvsadm("-C")
                    try service(lab, vip, port: 81, realPort: 8081, version: version, method: "-b", v6: v6)
                    try service(lab, vip, port: 82, realPort: 8082, version: version, method: "-b", v6: v6)
                    #expect(try lab.lvsadm("-L -n").contains(":81 rr pp\(version)\n"))
                    // A server that speaks first, behind HAProxy, which waits for the header: it comes in the handshake's last ACK.
                    try service(lab, vip, port: 83, realPort: 8083, version: version, method: "-b", v6: v6)
                    let banners = try lab.inside("c", "/usr/bin/python3", "-c", Self.bannerClient(v6 ? Lab.vip6 : Lab.vip, 83, count: 30))
                    #expect(banners.split(separator: "\n").filter { $0.hasSuffix("speaks first") }.count == 30, "\(version): \(banners)")
                    for port in [81, 82] {
                        let (right, wrong) = try requests(lab, "http://\(vip):\(port)/", client: client, count: 1000)
                        #expect(right == 1000, "\(version) \(v6 ? "IPv6" : "IPv4") :\(port): \(right) of 1000 named the client; \(wrong)")
                        let answer = try upload(lab, "http://\(vip):\(port)/upload", file)
                        #expect(answer == "stored", "\(version) \(v6 ? "IPv6" : "IPv4") :\(port): \(answer)")
                        uploads += 1
                    }
                }
            }
            // Each body arrived byte for byte, behind exactly one header (a second one would be the start of the request).
            let stored = try storedDigests(lab)
            #expect(stored.count == uploads && stored.allSatisfy { $0 == digest }, "\(stored) against \(digest)")
            // nginx logged the header's client for every request to it (8081: 4 × 1000, and the 4 uploads).
            let logged = (1...3).compactMap { try? String(contentsOf: lab.directory.appendingPathComponent("nginx\($0)/proxied.log"), encoding: .utf8) }
                .joined().split(separator: "\n")
            #expect(
                logged.filter { $0.hasPrefix(Lab.client + " ") || $0.hasPrefix(Lab.client6 + " ") }.count == 4004,
                "\(logged.count) lines, \(logged.prefix(3))")

            // NAT too: the real server sees the client as its peer, and in the header.
            try lab.lvsadm("-C")
            try lab.gateway(viaDirector: true)
            try service(lab, Lab.vip, port: 81, realPort: 8081, version: "v2", method: "-m", v6: false)
            let (right, wrong) = try requests(lab, "http://\(Lab.vip):81/", client: Lab.client, count: 300)
            #expect(right == 300, "NAT: \(wrong)")
        }
    }

    /// A keepalived.conf with DPVS's `proxy_protocol`: the service speaks it,
    /// and so do its HTTP_GET checks (`PROXY UNKNOWN` first), so that nginx,
    /// which wants a header on every connection, answers them and the servers
    /// stay in.
    @Test func keepalivedConfigurationAndChecksSpeakIt() throws {
        try withLab("ltpk", director: false) { lab in
            let servers = (1...3).map { i in
                "real_server \(Lab.real(i)) 8081 {\n weight 1\n HTTP_GET {\n url { path / status_code 200 }\n connect_timeout 1\n }\n}"
            }.joined(separator: "\n")
            let conf = lab.directory.appendingPathComponent("keepalived.conf")
            try """
            local_address_group laddr { \(Lab.lip) }
            virtual_server \(Lab.vip) 81 {
                delay_loop 1
                lb_algo rr
                lb_kind FNAT
                laddr_group_name laddr
                proxy_protocol v1
            \(servers)
            }
            """.write(to: conf, atomically: true, encoding: .utf8)
            try lab.startDirector(extra: ["--keepalived", conf.path])
            // Every nginx answered a check that spoke first (its header names no client: "- -"), and every server stays in.
            func checked(_ i: Int) -> Bool {
                ((try? String(contentsOf: lab.directory.appendingPathComponent("nginx\(i)/proxied.log"), encoding: .utf8)) ?? "")
                    .split(separator: "\n").contains("- -")
            }
            for _ in 0..<100 where !(1...3).allSatisfy(checked) { usleep(50_000) }
            #expect((1...3).allSatisfy(checked), "\(lab.logText("lvsd"))")
            guard (1...3).allSatisfy(checked) else { return }
            usleep(1_500_000)
            let health = try lab.lvsadm("-L -n --health")
            #expect(health.components(separatedBy: " up ").count == 4 && !health.contains("down"), "\(health)")
            #expect(try lab.lvsadm("-L -n").contains("TCP  \(Lab.vip):81 rr ppv1\n"))
            #expect(try lab.lvsadm("-S -n").contains("-A -t \(Lab.vip):81 -s rr --proxy-protocol v1\n"))
            let (right, wrong) = try requests(lab, "http://\(Lab.vip):81/", client: Lab.client, count: 30)
            #expect(right == 30, "\(wrong)")
        }
    }

    /// Every connection loses its first two segments after the SYN on the
    /// way to the server: the handshake's last ACK (with the header) and the
    /// first request. The client's retransmission carries the header again,
    /// and the stream still holds it exactly once.
    @Test func aLostFirstSegmentIsSentAgainWithTheHeaderOnce() throws {
        try withLab("ltpl", director: true) { lab in
            for i in 1...3 {
                try lab.inside(
                    "r\(i)", "nft",
                    "add table inet ltpl; add chain inet ltpl in { type filter hook input priority 0; }; add rule inet ltpl in tcp dport { 8081, 8082 } ct original packets 2-3 counter drop"
                )
                try lab.inside("r\(i)", "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
            }
            let (file, digest) = try lab.randomFile("upload.bin", megabytes: 10)
            for (v6, version) in [(false, "v1"), (true, "v2")] {
                let vip = v6 ? "[\(Lab.vip6)]" : Lab.vip
                try lab.lvsadm("-C")
                try service(lab, vip, port: 81, realPort: 8081, version: version, method: "-b", v6: v6)
                try service(lab, vip, port: 82, realPort: 8082, version: version, method: "-b", v6: v6)
                for port in [81, 82] {
                    let (right, wrong) = try requests(lab, "http://\(vip):\(port)/", client: v6 ? Lab.client6 : Lab.client, count: 15)
                    #expect(right == 15, "\(version) :\(port): \(wrong)")
                    #expect(try upload(lab, "http://\(vip):\(port)/upload", file) == "stored")
                }
            }
            let stored = try storedDigests(lab)
            #expect(stored.count == 4 && stored.allSatisfy { $0 == digest }, "\(stored) against \(digest)")
            // At least two segments dropped per connection (64 of them), so the test tested what it says.
            let dropped = try (1...3).map { try lab.inside("r\($0)", "nft", "list table inet ltpl") }.joined()
            let counts = dropped.matches(of: /packets (\d+)/).map { Int($0.1)! }
            #expect(counts.reduce(0, +) >= 2 * 64, "\(dropped)")
        }
    }
}
