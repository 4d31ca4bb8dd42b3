import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// Malformed frames and floods at a running lvsd (scapy and raw sockets from
/// real namespaces): every drop counted by reason, ICMP answered where the
/// kernel answers, legitimate clients served, lvsd alive with bounded memory.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct HostileTrafficTests {
    static let bin = Executables.directory
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("hostile/barrage.py").path

    /// Resident memory of a process, in KiB.
    func residentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ")[safe: 1] ?? "") ?? 0
    }

    func directorMAC(_ lab: Lab) throws -> String {
        try lab.inside("d", "cat", "/sys/class/net/\(lab.ns("d0"))/address").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func metric(_ lab: Lab, _ port: Int, _ name: String) throws -> Double {
        let text = try lab.inside("d", "curl", "-sS", "http://127.0.0.1:\(port)/metrics")
        return text.split(separator: "\n").filter { $0.hasPrefix(name) }.compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
    }

    @Test func malformedFramesAreCountedByReasonAnsweredAndSurvived() throws {
        let lab = try Lab(prefix: "lthost", bin: Self.bin)
        defer { lab.teardown() }
        let lvsd = try lab.startNAT(director: ["--metrics", "127.0.0.1:19181"])
        try lab.lvsadm("-A -t \(Lab.vip):80 -s rr")
        try lab.lvsadm("-A -t [\(Lab.vip6)]:80 -s rr")
        try lab.lvsadm("-A -t \(Lab.vip):81 -s rr")
        try lab.lvsadm("--add-laddr -t \(Lab.vip):81 -z \(Lab.lip)")
        for i in 1...3 {
            try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m")
            try lab.lvsadm("-a -t [\(Lab.vip6)]:80 -r [\(Lab.real6(i))]:8080 -m")
            try lab.lvsadm("-a -t \(Lab.vip):81 -r \(Lab.real(i)):8080 -b")
        }
        #expect(try lab.requests("http://\(Lab.vip)/", count: 30).count == 30)
        let before = residentKiB(lvsd.processIdentifier)

        let out = try lab.inside("rt", "/usr/bin/python3", Self.script, "barrage", "br0", try directorMAC(lab), Lab.vip, Lab.vip6, Lab.client, Lab.client6)
        #expect(out.contains("icmp-time-exceeded 3"), "\(out)")
        #expect(out.contains("arp-replies 20"), "\(out)")

        // A FULLNAT client whose ACKs already carry a TOA, then fill all 40 option bytes.
        try lab.inside(
            "c", "nft",
            "add table inet lvstest; add chain inet lvstest out { type filter hook output priority 0; }; add rule inet lvstest out tcp flags rst drop")
        let toa = try lab.inside("c", "/usr/bin/python3", Self.script, "options", Lab.vip, "81")
        #expect(toa.contains("handshake ok"), "\(toa)")
        try lab.inside("c", "nft", "delete table inet lvstest")
        usleep(600_000)
        #expect(try metric(lab, 19181, "lvsd_toa_inserted_total") + metric(lab, 19181, "lvsd_toa_failures_total") >= 2)

        let drops = try lab.lvsadm("-L -n --drops")
        for reason in [
            "truncated-ipv4", "bad-ihl", "ipv4-total-length-beyond-frame", "ipv4-total-length-below-header", "truncated-tcp",
            "tcp-data-offset-below-5", "tcp-header-beyond-segment", "bad-udp-length", "too-many-extension-headers",
            "misplaced-hop-by-hop", "ipv6-payload-length-beyond-frame", "not-syn", "unknown-fragment", "unrelated-icmp",
            "ttl-exceeded",
        ] {
            #expect(drops.range(of: "\n\(reason) +[1-9][0-9]*\n", options: .regularExpression) != nil, "\(reason) not counted:\n\(drops)")
        }
        let json = try lab.lvsadm("-L -n --drops --json")
        #expect(json.contains("\"bad-ihl\""), "\(json)")
        // Every flag combination without SYN (or with RST) is a not-syn drop: 256 - 64 at least.
        let notSYN = Int(drops.split(separator: "\n").first { $0.hasPrefix("not-syn ") }?.split(separator: " ").last ?? "") ?? 0
        #expect(notSYN >= 192, "\(drops)")

        // Still serving everybody, in bounded memory.
        #expect(lvsd.isRunning)
        #expect(try lab.requests("http://\(Lab.vip)/", count: 100).count == 100)
        #expect(try lab.requests("http://[\(Lab.vip6)]/", count: 20).count == 20)
        #expect(try lab.requests("http://\(Lab.vip):81/", count: 20).count == 20)
        let after = residentKiB(lvsd.processIdentifier)
        #expect(after < before + 64 * 1024, "RSS \(before) KiB → \(after) KiB")
    }

    /// Legitimate requests at a steady rate while `during` runs; the share
    /// that got their answer.
    func served(_ lab: Lab, requests: Int, rate: Int, during: () throws -> Void) throws -> (ok: Int, total: Int) {
        let urls = Array(repeating: "http://\(Lab.vip)/", count: requests)
        let client = try lab.start(
            "c",
            [
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--max-time", "10", "--rate", "\(rate)/s",
                "-H", "Connection: close",
            ] + urls, logName: "legit")
        try during()
        let deadline = Date().addingTimeInterval(Double(requests) / Double(rate) + 40)
        while client.isRunning && Date() < deadline { usleep(50_000) }
        let codes = lab.logText("legit").split(separator: "\n")
        return (codes.filter { $0 == "200" }.count, requests)
    }

    @Test func floodsLeaveLegitimateClientsServedAndTheTableBounded() throws {
        let lab = try Lab(prefix: "ltflood", bin: Self.bin)
        defer { lab.teardown() }
        // A table the floods overfill on this machine (a SYN flood here kept about 55,000 entries live in one of 65,536).
        let capacity = 32768
        let lvsd = try lab.startNAT(director: ["--metrics", "127.0.0.1:19182", "--connection-table-size", "\(capacity)"])
        try lab.lvsadm("-A -t \(Lab.vip):80 -s wlc")
        try lab.lvsadm("-A -u \(Lab.vip):53 -s rr")
        for i in 1...3 {
            try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m")
            try lab.lvsadm("-a -u \(Lab.vip):53 -r \(Lab.real(i)):5353 -m")
        }
        #expect(try lab.requests("http://\(Lab.vip)/", count: 20).count == 20)
        let before = residentKiB(lvsd.processIdentifier)
        let mac = try directorMAC(lab)
        var report = ""
        for (kind, port) in [("syn", "80"), ("udp", "53")] {
            var sent = ""
            var entries = 0.0
            let legit = try served(lab, requests: 400, rate: 40) {
                sent = try lab.inside("rt", "/usr/bin/python3", Self.script, "flood", "br0", mac, Lab.vip, port, "10", kind)
                // Read as the flood ends: its entries then start to leave (the real servers give up on them).
                entries = try metric(lab, 19182, "lvsd_connection_table_entries{worker=\"0\",family=\"ipv4\"}")
            }
            report +=
                "\(kind) flood: \(sent.trimmingCharacters(in: .whitespacesAndNewlines)) in 10 s, legitimate \(legit.ok)/\(legit.total), table \(Int(entries))/\(capacity)\n"
            #expect(Double(legit.ok) >= 0.99 * Double(legit.total), "\(report)")
            // The flood filled the table: legitimate clients got in only through eviction.
            #expect(entries >= 0.9 * Double(capacity), "\(report)")
            // After it, everyone.
            #expect(try lab.requests("http://\(Lab.vip)/", count: 100).count == 100, "\(report)")
        }
        print(report, terminator: "")
        #expect(lvsd.isRunning)
        let after = residentKiB(lvsd.processIdentifier)
        #expect(after < before + 64 * 1024, "RSS \(before) KiB → \(after) KiB")
    }

    @Test func synproxyKeepsASpoofedSYNFloodFromTheRealServers() throws {
        let lab = try Lab(prefix: "ltsynp", bin: Self.bin)
        defer { lab.teardown() }
        try lab.startNAT(director: ["--metrics", "127.0.0.1:19183"])
        try lab.lvsadm("-A -t \(Lab.vip):80 -s rr -j enable")
        for i in 1...3 {
            try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m")
            // What each real server's kernel receives: SYNs from the flood's sources, and the client's.
            try lab.inside(
                "r\(i)", "nft",
                """
                add table inet lvssyn; add chain inet lvssyn in { type filter hook input priority 0; };
                add rule inet lvssyn in ip saddr 198.18.128.0/17 tcp flags & (syn | ack) == syn counter;
                add rule inet lvssyn in ip saddr \(Lab.client) tcp flags & (syn | ack) == syn counter
                """)
        }
        #expect(try lab.lvsadm("-L -n").contains("TCP  \(Lab.vip):80 rr synproxy"))
        // The first request of each connection comes before the real server's SYN-ACK: held, not lost.
        let t0 = Date()
        #expect(try lab.requests("http://\(Lab.vip)/", count: 50).count == 50)
        #expect(Date().timeIntervalSince(t0) < 5, "the client had to retransmit")
        var sent = ""
        let legit = try served(lab, requests: 400, rate: 40) {
            sent = try lab.inside("rt", "/usr/bin/python3", Self.script, "flood", "br0", try directorMAC(lab), Lab.vip, "80", "10", "syn")
        }
        var spoofed = 0
        var genuine = 0
        for i in 1...3 {
            let rules = try lab.inside("r\(i)", "nft", "list chain inet lvssyn in")
            let counts = rules.split(separator: "\n").filter { $0.contains("counter packets") }
                .map { Int($0.split(separator: " ").drop { $0 != "packets" }.dropFirst().first ?? "") ?? -1 }
            spoofed += counts.first ?? -1
            genuine += counts.last ?? 0
        }
        let cookies = try metric(lab, 19183, "lvsd_synproxy_cookies_total")
        let entries = try metric(lab, 19183, "lvsd_connection_table_entries{worker=\"0\",family=\"ipv4\"}")
        let report =
            "\(sent.trimmingCharacters(in: .whitespacesAndNewlines)); legitimate \(legit.ok)/\(legit.total); real servers saw \(spoofed) spoofed and \(genuine) genuine SYNs; \(Int(cookies)) cookies; \(Int(entries)) entries"
        print("synproxy flood: " + report)
        #expect(spoofed == 0, "\(report)")
        #expect(genuine >= 50 + legit.ok, "\(report)")
        #expect(Double(legit.ok) >= 0.99 * Double(legit.total), "\(report)")
        #expect(entries < 5000, "\(report)")
        #expect(try lab.requests("http://\(Lab.vip)/", count: 100).count == 100)
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
