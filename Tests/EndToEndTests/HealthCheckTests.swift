import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// keepalived.conf's checkers run by lvsd against real nginx: a stopped
/// server leaves the rotation, comes back when it starts again, and with
/// inhibit_on_failure stays listed at weight 0.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct HealthCheckTests {
    static let bin = Executables.directory

    func nginx(_ lab: Lab, _ i: Int, _ signal: String? = nil) throws {
        let dir = lab.directory.appendingPathComponent("nginx\(i)").path
        if let signal {
            try lab.inside("r\(i)", "nginx", "-c", "\(dir)/nginx.conf", "-p", dir, "-s", signal)
        } else {
            try lab.start("r\(i)", ["nginx", "-c", "\(dir)/nginx.conf", "-p", dir], logName: "nginx\(i)-again")
        }
    }

    /// Polls `lvsadm -L -n` until `condition` holds; the seconds it took, or nil after `limit`.
    func waitFor(_ lab: Lab, limit: Double = 10, _ condition: (String) -> Bool) throws -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < limit {
            if condition(try lab.lvsadm("-L -n")) { return Date().timeIntervalSince(start) }
            usleep(100_000)
        }
        return nil
    }

    /// A real server's weight in a `-L -n` listing.
    func weight(_ listing: String, _ server: String) -> Int? {
        listing.split(separator: "\n").first { $0.contains(" \(server):") }.flatMap { Int($0.split(separator: " ")[3]) }
    }

    /// A real server block with a TCP_CHECK that fails at the first refusal.
    func tcpChecked(_ i: Int) -> String {
        """
        real_server \(Lab.real(i)) 8080 {
            TCP_CHECK {
                connect_timeout 1
                retry 0
            }
        }
        """
    }

    /// The lab serving one NAT virtual server from a keepalived.conf with
    /// these lines inside (checks every second); returns lvsd's process.
    @discardableResult
    func startKeepalived(_ lab: Lab, _ lines: String, extra: [String] = []) throws -> RunningProcess {
        let conf = lab.directory.appendingPathComponent("keepalived.conf")
        try "virtual_server \(Lab.vip) 80 {\ndelay_loop 1\nlb_algo rr\nlb_kind NAT\n\(lines)\n}\n".write(to: conf, atomically: true, encoding: .utf8)
        return try lab.startNAT(director: ["--keepalived", conf.path] + extra)
    }

    @Test func aStoppedServerLeavesTheRotationAndComesBack() throws {
        let lab = try Lab(prefix: "lthealth", bin: Self.bin)
        defer { lab.teardown() }
        let lvsd = try startKeepalived(
            lab,
            """
            \(tcpChecked(1))
            \(tcpChecked(2))
            real_server \(Lab.real(3)) 8080 {
                weight 2
                inhibit_on_failure
                HTTP_GET {
                    url { path / status_code 200 }
                    connect_timeout 1
                    retry 2
                    delay_before_retry 0.2
                }
            }
            """, extra: ["--metrics", "127.0.0.1:19184"])
        let allUp = try waitFor(lab) { _ in (try? lab.lvsadm("-L -n --health"))?.components(separatedBy: " up ").count == 4 }
        #expect(allUp != nil)

        // rs2 stops: out within delay_loop + connect_timeout, and no request fails after that.
        try nginx(lab, 2, "stop")
        let out = try waitFor(lab) { !$0.contains(Lab.real(2)) }
        #expect(out != nil && out! <= 2.5, "\(String(describing: out)) s")
        let health = try lab.lvsadm("-L -n --health")
        #expect(health.contains("\(Lab.real(2)):8080") && health.contains("down") && health.contains("Connection refused"), "\(health)")
        let metrics = try lab.inside("d", "curl", "-sS", "http://127.0.0.1:19184/metrics")
        #expect(
            metrics.contains(
                "lvsd_backend_up{local_address=\"\(Lab.vip)\",local_port=\"80\",remote_address=\"\(Lab.real(2))\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 0"
            ))
        let without = try lab.requests("http://\(Lab.vip)/", count: 100)
        #expect(without.count == 100 && !without.contains { $0.hasPrefix("rs2 ") })
        // A reload keeps it out: the new checkers start from what the old ones knew.
        // (Its port now drops rather than refuses, so a check takes connect_timeout.)
        try lab.inside("r2", "nft", "add table inet hc; add chain inet hc in { type filter hook input priority 0; }; add rule inet hc in tcp dport 8080 drop")
        kill(lvsd.processIdentifier, SIGHUP)
        for _ in 0..<10 {
            usleep(100_000)
            #expect(!(try lab.lvsadm("-L -n")).contains("\(Lab.real(2)):8080"))
        }
        try lab.inside("r2", "nft", "delete table inet hc")

        // It starts again: back in the rotation.
        try nginx(lab, 2)
        let back = try waitFor(lab) { $0.contains("\(Lab.real(2)):8080") }
        #expect(back != nil && back! <= 3, "\(String(describing: back)) s")
        #expect(try lab.requests("http://\(Lab.vip)/", count: 40).contains { $0.hasPrefix("rs2 ") })

        // rs3 stops: inhibit_on_failure keeps it listed at weight 0, unused.
        try nginx(lab, 3, "stop")
        let inhibited = try waitFor(lab) { $0.range(of: "\(Lab.real(3)):8080 +Masq +0 ", options: .regularExpression) != nil }
        #expect(inhibited != nil)
        let without3 = try lab.requests("http://\(Lab.vip)/", count: 40)
        #expect(without3.count == 40 && !without3.contains { $0.hasPrefix("rs3 ") })
        try nginx(lab, 3)
        let restored = try waitFor(lab) { $0.range(of: "\(Lab.real(3)):8080 +Masq +2 ", options: .regularExpression) != nil }
        #expect(restored != nil)
    }

    @Test func losingQuorumSwitchesToTheSorryServerAndBack() throws {
        let lab = try Lab(prefix: "ltquorum", bin: Self.bin)
        defer { lab.teardown() }
        try startKeepalived(
            lab,
            """
            quorum 2
            sorry_server \(Lab.real(3)) 8080
            \(tcpChecked(1))
            \(tcpChecked(2))
            """)
        let allUp = try waitFor(lab) { _ in (try? lab.lvsadm("-L -n --health"))?.components(separatedBy: " up ").count == 3 }
        #expect(allUp != nil)
        #expect(try waitFor(lab) { !$0.contains(Lab.real(3)) } != nil)

        // One of two down: weight 1 < quorum 2, the sorry server serves with the other.
        try nginx(lab, 1, "stop")
        let lost = try waitFor(lab) { $0.contains("\(Lab.real(3)):8080") && !$0.contains("\(Lab.real(1)):8080") }
        #expect(lost != nil)
        let during = Set(try lab.requests("http://\(Lab.vip)/", count: 20).map { String($0.prefix(3)) })
        #expect(during == ["rs2", "rs3"], "\(during)")

        // Back: quorum regained, the sorry server leaves.
        try nginx(lab, 1)
        let regained = try waitFor(lab) { $0.contains("\(Lab.real(1)):8080") && !$0.contains("\(Lab.real(3)):8080") }
        #expect(regained != nil)
        let after = Set(try lab.requests("http://\(Lab.vip)/", count: 20).map { String($0.prefix(3)) })
        #expect(after == ["rs1", "rs2"], "\(after)")
    }

    /// DPVS's passive dest-check, with no checker configured: a real server
    /// that silently drops SYNs gets weight 0 within seconds, and its weight
    /// back on probation when it answers again.
    @Test func aServerThatDropsSYNsIsInhibitedPassivelyAndComesBack() throws {
        let lab = try Lab(prefix: "ltpass", bin: Self.bin)
        defer { lab.teardown() }
        try lab.startNAT()
        try lab.lvsadm("-A -t \(Lab.vip):80 -s rr")
        for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m") }
        try lab.inside("r2", "nft", "add table inet blackhole")
        try lab.inside("r2", arguments: ["nft", "add chain inet blackhole in { type filter hook input priority 0 ; }"])
        try lab.inside("r2", arguments: ["nft", "add rule inet blackhole in tcp dport 8080 drop"])

        // Three clients at once: the one sent to rs2 hangs until its third SYN (about 3 s) tells lvsd.
        let start = Date()
        try lab.start(
            "c", ["curl", "-sS", "--connect-timeout", "5", "-Z", "http://\(Lab.vip)/", "http://\(Lab.vip)/", "http://\(Lab.vip)/"],
            logName: "curl")
        let out = try waitFor(lab) { weight($0, Lab.real(2)) == 0 }
        #expect(out != nil && out! < 4.5, "\(String(describing: out)) s")
        let listing = try lab.lvsadm("-L -n")
        #expect(out != nil, "\(listing)\n\(lab.logText("lvsd"))")
        print("rs2 inhibited \(Int(Date().timeIntervalSince(start) * 1000)) ms after the first request")
        let health = try lab.lvsadm("-L -n --health")
        #expect(health.contains("passive") && health.contains("no SYN-ACK to 3 SYNs"), "\(health)")
        let during = try lab.requests("http://\(Lab.vip)/", count: 30, timeout: 2)
        #expect(during.count == 30 && !during.contains { $0.hasPrefix("rs2") })

        // It answers again: after 5 s its weight is back, and its first SYN-ACK ends the probation.
        try lab.inside("r2", "nft", "delete table inet blackhole")
        #expect(try waitFor(lab, limit: 8) { weight($0, Lab.real(2)) == 1 } != nil)
        let after = try lab.requests("http://\(Lab.vip)/", count: 30)
        #expect(after.filter { $0.hasPrefix("rs2") }.count == 10, "\(after)")
        let cleared = try lab.lvsadm("-L -n --health")
        #expect(!cleared.contains("passive"), "\(cleared)")
    }

    /// SSL_GET against nginx's TLS port, HTTP_GET with a digest (genhash's
    /// MD5 of the body), quorum_up/quorum_down, and omega at shutdown.
    @Test func tlsChecksDigestsAndTheirScripts() throws {
        let lab = try Lab(prefix: "ltdig", bin: Self.bin)
        defer { lab.teardown() }
        let log = lab.directory.appendingPathComponent("scripts.log").path
        let good = try lab.inside("c", "/bin/sh", "-c", "printf 'rs2 static\\n' | md5sum").prefix(32)
        let conf = lab.directory.appendingPathComponent("keepalived.conf")
        try """
        virtual_server \(Lab.vip) 80 {
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            quorum 2
            quorum_up "/bin/sh -c 'echo quorum-up >> \(log)'"
            quorum_down "/bin/sh -c 'echo quorum-down >> \(log)'"
            omega
            real_server \(Lab.real(1)) 8080 {
                notify_down "/bin/sh -c 'echo rs1-down >> \(log)'"
                SSL_GET {
                    url { path / }
                    connect_port 8443
                    connect_timeout 1
                    retry 0
                }
            }
            real_server \(Lab.real(2)) 8080 {
                HTTP_GET {
                    url {
                        path /static
                        digest \(good)
                    }
                    connect_timeout 1
                }
            }
            real_server \(Lab.real(3)) 8080 {
                HTTP_GET {
                    url {
                        path /static
                        digest \(String(repeating: "0", count: 32))
                        status_code 200-299
                    }
                    connect_timeout 1
                    retry 0
                }
            }
        }
        """.write(to: conf, atomically: true, encoding: .utf8)
        let lvsd = try lab.startDirector(extra: ["--keepalived", conf.path])
        try lab.startNginx(tls: true)
        try lab.gateway(viaDirector: true)
        func health() -> String { (try? lab.lvsadm("-L -n --health")) ?? "" }
        func lines() -> [String] { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

        // rs1 passes over TLS, rs2 with the right digest; rs3's digest is wrong.
        let settled = try waitFor(lab) { _ in health().components(separatedBy: " up ").count == 3 && health().contains(" down ") }
        #expect(settled != nil, "\(health())\n\(lab.logText("lvsd"))")
        let h = health()
        #expect(h.contains("SSL_GET") && h.contains("digest ") && h.contains("expected 00000000000000000000000000000000"), "\(h)")
        #expect(try lab.lvsadm("-L -n").contains(Lab.real(1)) && !(try lab.lvsadm("-L -n")).contains(Lab.real(3)))

        // rs1 stops: weight 1 is below quorum 2.
        try nginx(lab, 1, "stop")
        #expect(try waitFor(lab) { _ in lines().contains("quorum-down") && lines().contains("rs1-down") } != nil, "\(lines())")
        try nginx(lab, 1)
        #expect(try waitFor(lab) { _ in lines().contains("quorum-up") } != nil, "\(lines())")

        // omega: stopping runs rs1's notify_down and the held quorum's quorum_down.
        let before = lines().count
        kill(lvsd.processIdentifier, SIGTERM)
        lvsd.waitUntilExit()
        #expect(Array(lines().dropFirst(before)) == ["rs1-down", "quorum-down"], "\(lines())")
    }

    /// SMTP_CHECK, DNS_CHECK, UDP_CHECK and PING_CHECK against real servers from Debian, and FILE_CHECK:
    /// OpenSMTPD (each in a mount namespace of its own: its spool, control
    /// socket and resolver have fixed paths) and dnsmasq on every real server. A
    /// server whose SMTP or DNS service stops leaves that service's rotation,
    /// and comes back when it starts again; UDP_CHECK takes dnsmasq's answer
    /// to a query by its id.
    @Test func smtpDNSAndUDPChecksFollowTheirServices() throws {
        let lab = try Lab(prefix: "ltcheck", bin: Self.bin)
        defer { lab.teardown() }
        do {
            func smtpd(_ i: Int) throws -> RunningProcess {
                let conf = lab.directory.appendingPathComponent("smtpd\(i).conf")
                try "listen on \(Lab.real(i)) port 25\naction \"local\" mbox\nmatch from any for local action \"local\"\n"
                    .write(to: conf, atomically: true, encoding: .utf8)
                // The client's reverse lookup goes to the server's own dnsmasq, which answers at once.
                let resolver = lab.directory.appendingPathComponent("resolv\(i).conf")
                try "nameserver \(Lab.real(i))\n".write(to: resolver, atomically: true, encoding: .utf8)
                let setup =
                    "mkdir -p /var/spool/smtpd && mount -t tmpfs -o mode=711 tmpfs /var/spool/smtpd && mount -t tmpfs tmpfs /run"
                    + " && mount --bind \(resolver.path) /etc/resolv.conf"
                return try lab.start("r\(i)", ["unshare", "-m", "sh", "-c", "\(setup) && exec smtpd -d -f \(conf.path)"], logName: "smtpd\(i)")
            }
            func dnsmasq(_ i: Int) throws -> RunningProcess {
                try lab.start(
                    "r\(i)",
                    [
                        "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--user=root", "--bind-interfaces",
                        "--listen-address=\(Lab.real(i))", "--pid-file=\(lab.directory.path)/dnsmasq\(i).pid", "--address=/check.test/\(Lab.real(i))",
                    ], logName: "dnsmasq\(i)")
            }
            var smtp = try (1...3).map(smtpd)
            var dns = try (1...3).map(dnsmasq)
            // A query for check.test of type A, id 0x4c56: the reply must carry the id and the response bit.
            let query = "4c56 0100 0001 0000 0000 0000 05 636865636b 04 74657374 00 0001 0001"
            let conf = lab.directory.appendingPathComponent("keepalived.conf")
            let drain = lab.directory.appendingPathComponent("drain")
            func block(_ port: Int, _ proto: String, _ check: String) -> String {
                "virtual_server \(Lab.vip) \(port) {\n delay_loop 1\n lb_algo rr\n lb_kind NAT\n protocol \(proto)\n"
                    + (1...3).map { "real_server \(Lab.real($0)) \(port == 54 ? 53 : port) {\n\(check)\n}\n" }.joined() + "}\n"
            }
            try [
                block(25, "TCP", "SMTP_CHECK {\n connect_timeout 1\n retry 0\n helo_name director.lvs.test\n}"),
                block(53, "UDP", "DNS_CHECK {\n connect_timeout 1\n retry 0\n type A\n name check.test\n}"),
                block(80, "TCP", "PING_CHECK {\n connect_timeout 1\n retry 0\n}"),
                "track_file drain {\n file \(drain.path)\n weight 0\n}\n",
                block(81, "TCP", "FILE_CHECK {\n track_file drain\n}"),
                block(
                    54, "UDP", "UDP_CHECK {\n connect_port 53\n connect_timeout 1\n retry 0\n payload \(query)\n require_reply 4c56 8x\n min_reply_length 12\n}"
                ),
            ].joined().write(to: conf, atomically: true, encoding: .utf8)
            try lab.startDirector(extra: ["--keepalived", conf.path])
            func servers(_ port: Int) -> Set<String> {
                let listing = (try? lab.lvsadm("-L -n")) ?? ""
                var out = Set<String>()
                var inService = false
                for line in listing.split(separator: "\n") {
                    if line.hasPrefix("TCP") || line.hasPrefix("UDP") { inService = line.contains("\(Lab.vip):\(port) ") }
                    if inService, line.contains("->"), let i = (1...3).first(where: { line.contains(" \(Lab.real($0)):") }) { out.insert("rs\(i)") }
                }
                return out
            }
            let all: Set<String> = ["rs1", "rs2", "rs3"]
            func settles(_ port: Int, _ want: Set<String>, _ what: String) throws {
                let health = { (try? lab.lvsadm("-L -n --health")) ?? "" }
                #expect(try waitFor(lab, limit: 8) { _ in servers(port) == want } != nil, "\(what): \(servers(port))\n\(health())")
            }
            // Every checker has passed once (the servers are listed before any check).
            let checked = try waitFor(lab) { _ in
                ((try? lab.lvsadm("-L -n --health")) ?? "").split(separator: "\n").filter { $0.contains("_CHECK") && $0.contains(" up ") }.count == 15
            }
            #expect(checked != nil, "\((try? lab.lvsadm("-L -n --health")) ?? "")")
            let log = lab.logText("smtpd1")
            #expect(log.isEmpty || !log.contains("error"), "\(log)")

            smtp[1].stop()
            try settles(25, ["rs1", "rs3"], "smtpd on rs2 stopped")
            #expect(servers(53) == all && servers(54) == all)
            smtp[1] = try smtpd(2)
            try settles(25, all, "smtpd on rs2 started again")

            dns[2].stop()
            try settles(53, ["rs1", "rs2"], "dnsmasq on rs3 stopped (DNS_CHECK)")
            try settles(54, ["rs1", "rs2"], "dnsmasq on rs3 stopped (UDP_CHECK: port unreachable)")
            dns[2] = try dnsmasq(3)
            try settles(53, all, "dnsmasq on rs3 started again (DNS_CHECK)")
            try settles(54, all, "dnsmasq on rs3 started again (UDP_CHECK)")

            // FILE_CHECK (weight 0): a number but 0 in the file takes the servers out; 0 puts them back.
            try "1\n".write(to: drain, atomically: true, encoding: .utf8)
            try settles(81, [], "the drain file says 1")
            try "0\n".write(to: drain, atomically: true, encoding: .utf8)
            try settles(81, all, "the drain file says 0")

            // PING_CHECK: rs1 stops answering echo requests, then answers again.
            try lab.inside("r1", "nft", "add table ip ltcheck { chain in { type filter hook input priority 0; icmp type echo-request drop; }; }")
            try settles(80, ["rs2", "rs3"], "rs1 drops echo requests")
            try lab.inside("r1", "nft", "delete table ip ltcheck")
            try settles(80, all, "rs1 answers echo requests again")
            _ = smtp
            _ = dns
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
