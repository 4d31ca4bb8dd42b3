import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// Firewall-mark services fed by the marking rules an operator already has:
/// an `iptables -t mangle … -j MARK` rule (iptables-nft), an nft ruleset,
/// and lvsd's own marks file, with nginx behind and curl in front; a change
/// to the ruleset followed without a restart.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct FirewallMarkEndToEndTests {
    static let bin = Executables.directory

    /// The real server a request reached (`rsN` first in nginx's answer), or the error.
    func reached(_ lab: Lab, _ url: String, insecure: Bool = false) -> String {
        let args = ["curl", "-sS", "-g", "--max-time", "3", "-H", "Connection: close"] + (insecure ? ["-k"] : []) + [url]
        let out = (try? lab.inside("c", arguments: args, check: false)) ?? ""
        let name = String(out.split(separator: " ").first ?? "")
        return name.hasPrefix("rs") ? name : "none"
    }

    @Test func marksFromIptablesNftablesAndAMarksFileServeTheirServices() throws {
        let lab = try Lab(prefix: "ltfwm", bin: Self.bin)
        defer { lab.teardown() }
        do {
            let marks = lab.directory.appendingPathComponent("lvs.marks")
            try "# lvsd's own syntax: the director needs no netfilter rule for this one\nip daddr \(Lab.vip) tcp dport 8080 meta mark set 2\n"
                .write(to: marks, atomically: true, encoding: .utf8)
            try lab.startDirector(extra: ["--marks", marks.path])
            try lab.startNginx(tls: true)
            try lab.gateway(viaDirector: true)
            // 80 and 443 under mark 1, persistent: one client stays on one server for both.
            try lab.inside(
                "d", "iptables", "-t", "mangle", "-A", "PREROUTING", "-d", Lab.vip, "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "MARK",
                "--set-mark", "1")
            try lab.lvsadm("-A -f 1 -s rr -p 60")
            try lab.lvsadm("-A -f 2 -s rr")
            for i in 1...3 {
                try lab.lvsadm("-a -f 1 -r \(Lab.real(i)):0 -m")
                try lab.lvsadm("-a -f 2 -r \(Lab.real(i)):0 -m")
            }
            usleep(2_500_000)  // the ruleset read again (every second)
            var seen: [String] = []
            for _ in 0..<3 {
                seen.append(reached(lab, "http://\(Lab.vip)/"))
                seen.append(reached(lab, "https://\(Lab.vip)/", insecure: true))
            }
            #expect(Set(seen).count == 1 && seen[0].hasPrefix("rs"), "mark 1 over 80 and 443: \(seen)\n\(lab.logText("lvsd"))")
            let stats = try lab.lvsadm("-L -n --stats")
            #expect(stats.contains(try Regex("FWM  1 +6 ")), "\(stats)")
            // The marks file's mark 2: round robin, 3 of 9 each.
            let spread = (0..<9).map { _ in reached(lab, "http://\(Lab.vip):8080/") }
            #expect((1...3).allSatisfy { i in spread.filter { $0 == "rs\(i)" }.count == 3 }, "mark 2: \(spread)")

            // The rules change under lvsd: an nft table marks 443 only and the IPv6 VIP, then the iptables rule goes
            // (in that order, so that no read of the ruleset finds mark 1 without a rule).
            try lab.inside(
                "d", "nft", "-f", "-",
                input: """
                    table inet ltfwm {
                      set web { type inet_service; elements = { 443 } }
                      chain pre {
                        type filter hook prerouting priority mangle; policy accept;
                        ip daddr \(Lab.vip) tcp dport @web meta mark set 1
                        ip6 daddr \(Lab.vip6) tcp dport 80 meta mark set 0x3 counter
                        ct state established meta mark set 9
                      }
                    }
                    """)
            try lab.inside("d", "iptables", "-t", "mangle", "-F", "PREROUTING")
            try lab.lvsadm("-A -f 3 -6 -s rr")
            for i in 1...3 { try lab.lvsadm("-a -f 3 -6 -r [\(Lab.real6(i))]:0 -m") }
            usleep(2_500_000)
            #expect(reached(lab, "http://\(Lab.vip)/") == "none", "port 80 is no longer marked")
            #expect(reached(lab, "https://\(Lab.vip)/", insecure: true) == seen[0], "443 still mark 1, still persistent")
            let six = (0..<3).map { _ in reached(lab, "http://[\(Lab.vip6)]/") }
            #expect(Set(six) == ["rs1", "rs2", "rs3"], "mark 3 over IPv6: \(six)")
            let log = lab.logText("lvsd")
            #expect(log.contains("nftables rule not followed: table inet ltfwm chain pre: `ct state established meta mark set 0x00000009`"), "\(log)")
            #expect(!log.contains("FWM  1: no rule") && !log.contains("FWM  3 IPv6: no rule"), "\(log)")

            // A mark nothing sets is said, not served silently empty.
            try lab.lvsadm("-A -f 4 -s rr")
            usleep(2_500_000)
            #expect(lab.logText("lvsd").contains("FWM  4: no rule lvsd follows sets this mark"), "\(lab.logText("lvsd"))")
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
