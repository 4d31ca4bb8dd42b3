import Foundation
import LVSCore
import LVSPacket
import Logging
import Testing

@testable import LVSConfiguration
@testable import LVSDaemon

/// `nft list ruleset` as nft 1.0.6 prints it: native rules, named and
/// anonymous sets, ranges, an iptables-nft mangle table (translated by nft),
/// and rules lvsd cannot follow.
let nftListRuleset = """
    table inet lvs {
    	set vips {
    		type ipv4_addr
    		flags interval
    		elements = { 198.18.1.10, 198.18.2.0/24 }
    	}

    	chain pre {
    		type filter hook prerouting priority mangle; policy accept;
    		ip daddr @vips tcp dport { 80, 443 } meta mark set 0x00000001
    		ip6 daddr 2001:db8::10 tcp dport 1000-2000 iifname "eth0" meta mark set 0x00000002 counter packets 0 bytes 0 accept
    		ip saddr 198.18.0.0/16 udp dport 53 meta mark set 0x00000003
    		ct state new meta mark set 0x00000004
    	}
    }
    table ip mangle {
    	chain PREROUTING {
    		type filter hook prerouting priority mangle; policy accept;
    		meta l4proto tcp ip daddr 198.18.1.10 tcp dport { 80, 443 } counter packets 0 bytes 0 meta mark set 0x5
    		ip daddr 198.18.1.11 tcp dport 80 counter packets 0 bytes 0 meta mark set 0x6
    		iifname "veth0" ip saddr 198.18.0.0/16 udp dport 1000-2000 counter packets 0 bytes 0 meta mark set 0x7
    		iifname "veth1" meta l4proto tcp ip saddr != 198.18.5.0/24 tcp sport { 1024-2000, 3000 } counter packets 0 bytes 0 meta mark set 0x22
    	}
    }
    table ip6 six {
    	set v6 {
    		type ipv6_addr
    		flags interval
    		elements = { 2001:db8::10,
    			     2001:db8:1::/64,
    			     2001:db8:2::1-2001:db8:2::9 }
    	}

    	set ports {
    		type inet_service
    		elements = { 80, 443, 8080 }
    	}

    	chain pre {
    		type filter hook prerouting priority mangle - 5; policy accept;
    		ip6 daddr @v6 meta l4proto { tcp, udp } th dport @ports meta mark set 0x00000010
    		ip6 nexthdr tcp ip6 saddr != 2001:db8::/32 meta mark set 0x00000011 return
    		iif "lo" meta mark set 0x00000012
    		tcp dport 22 jump other
    	}

    	chain other {
    		meta mark set 0x00000013
    	}
    }
    table inet t2 {
    	chain c {
    		type filter hook prerouting priority mangle; policy accept;
    		ip protocol sctp sctp dport 3868 meta mark set 0x00000014
    		ip daddr { 198.18.1.1-198.18.1.3, 198.18.9.0/30 } udp dport { 1-10, 53 } counter packets 0 bytes 0 meta mark set 0x00000015 comment "dns"
    	}
    }
    """

@Suite struct MarkRulesTests {
    func address(_ s: String) -> IPAddress { IPAddress(s)! }

    @Test func nftablesRulesetCompilesToClassifierLinesByPriority() throws {
        let m = MarkRules.nftables(nftListRuleset)
        // mangle - 5 (table ip6 six) runs first; the mangle chains in listing order.
        let marks = m.lines.map(\.rule.mark)
        #expect(marks.first == 0x10)
        // ip6 daddr @v6 (two elements and the range 2001:db8:2::1-9 as 4 prefixes) x { tcp, udp } x @ports (3).
        let six = m.lines.filter { $0.rule.mark == 0x10 }
        #expect(Set(six.map(\.rule.proto)) == [.tcp, .udp])
        #expect(Set(six.map(\.rule.ports)) == [80...80, 443...443, 8080...8080])
        #expect(six.allSatisfy { $0.rule.ipv6 == true && $0.rule.verdict == .next })
        let v6Prefixes = Set(six.map { "\($0.rule.destination!)/\($0.rule.destinationPrefixLength)" })
        #expect(
            v6Prefixes == [
                "2001:db8::10/128", "2001:db8:1::/64", "2001:db8:2::1/128", "2001:db8:2::2/127", "2001:db8:2::4/126", "2001:db8:2::8/127",
            ])
        #expect(six.count == 6 * 2 * 3)

        // The inet table's set @vips and an anonymous set of ports.
        let one = m.lines.filter { $0.rule.mark == 1 }
        #expect(Set(one.map { "\($0.rule.destination!)/\($0.rule.destinationPrefixLength)" }) == ["198.18.1.10/32", "198.18.2.0/24"])
        #expect(Set(one.map(\.rule.ports)) == [80...80, 443...443])
        #expect(one.allSatisfy { $0.rule.proto == .tcp && $0.rule.ipv6 == false })

        // accept ends the chain; iifname kept as a name.
        let two = try #require(m.lines.first { $0.rule.mark == 2 })
        #expect(two.rule.verdict == .endChain && two.interfaceName == "eth0" && two.rule.ports == 1000...2000)
        #expect(two.rule.destination == address("2001:db8::10") && two.rule.destinationPrefixLength == 128)

        // iptables -t mangle … -m multiport --dports 80,443 -j MARK --set-mark 5, as iptables-nft lists it.
        let five = m.lines.filter { $0.rule.mark == 5 }
        #expect(five.count == 2 && five.allSatisfy { $0.rule.proto == .tcp && $0.rule.destination == address("198.18.1.10") })
        let seven = try #require(m.lines.first { $0.rule.mark == 7 })
        #expect(seven.interfaceName == "veth0" && seven.rule.source == address("198.18.0.0") && seven.rule.sourcePrefixLength == 16)
        #expect(seven.rule.proto == .udp && seven.rule.ports == 1000...2000)
        // The inet t2 table: sctp, an address range and a port range in one set.
        #expect(m.lines.contains { $0.rule.mark == 0x14 && $0.rule.proto == .sctp && $0.rule.ports == 3868...3868 })
        let dns = m.lines.filter { $0.rule.mark == 0x15 }
        #expect(
            Set(dns.map { "\($0.rule.destination!)/\($0.rule.destinationPrefixLength)" }) == [
                "198.18.1.1/32", "198.18.1.2/31", "198.18.9.0/30",
            ])
        #expect(Set(dns.map(\.rule.ports)) == [1...10, 53...53])

        // Each rule lvsd cannot follow is named, with where and why.
        let reasons = m.notices.map(\.description)
        #expect(reasons.count == 4, "\(reasons)")
        #expect(reasons.contains { $0.hasPrefix("table inet lvs chain pre: `ct state new meta mark set 0x00000004`: ct state") })
        #expect(reasons.contains { $0.contains("ip6 saddr !=") && $0.contains("equality only") })
        #expect(reasons.contains { $0.contains("ip saddr !=") })
        #expect(reasons.contains { $0.contains("jump") })
        // Not base chains on prerouting: chain other is not read.
        #expect(!m.lines.contains { $0.rule.mark == 0x13 })
        // iif "lo" with a mark.
        #expect(m.lines.contains { $0.rule.mark == 0x12 && $0.interfaceName == "lo" })
        #expect(reasons.contains { $0.contains("tcp dport 22 jump other") })
    }

    @Test func interfacesResolveToIndicesAndUnknownOnesMatchNothing() {
        let m = MarkRules.nftables(nftListRuleset)
        let resolved = m.resolved { name in name == "veth0" ? [7] : name == "lo" ? [1] : [] }
        #expect(resolved.contains { $0.mark == 7 && $0.interface == 7 })
        #expect(resolved.contains { $0.mark == 0x12 && $0.interface == 1 })
        #expect(!resolved.contains { $0.mark == 2 })
        #expect(resolved.count == m.lines.count - m.lines.filter { $0.interfaceName == "eth0" || $0.interfaceName == "veth1" }.count)
    }

    @Test func marksFileIsRulesInNftSyntaxAndRefusesWhatItCannotFollow() throws {
        let m = try MarkRules.file(
            """
            # the web VIP: 80 and 443 under one mark
            ip daddr 198.18.1.10 tcp dport { 80, 443 } meta mark set 1
            ip6 daddr 2001:db8::10 meta l4proto tcp th dport { 80,
                443 } mark set 0x2 accept
            ip saddr 198.18.7.0/24 drop
            """, file: "/etc/lvs.marks")
        #expect(m.lines.count == 5)
        #expect(m.lines[0].rule == FirewallMarkRule(mark: 1, rule: 0, proto: .tcp, destination: address("198.18.1.10"), ports: 80...80))
        #expect(m.lines[3].rule.mark == 2 && m.lines[3].rule.verdict == .endChain && m.lines[3].rule.rule == 1 && m.lines[3].rule.ipv6 == true)
        #expect(m.lines[4].rule.mark == nil && m.lines[4].rule.verdict == .drop && m.lines[4].rule.sourcePrefixLength == 24)
        #expect(
            throws: ConfigurationError(
                file: "/etc/lvs.marks", line: 2, message: "`ct state new meta mark set 1`: ct state: connection tracking's state is not lvsd's")
        ) {
            try MarkRules.file("ip daddr 198.18.1.10 meta mark set 1\nct state new meta mark set 1\n", file: "/etc/lvs.marks")
        }
        #expect(throws: ConfigurationError.self) { try MarkRules.file("ip daddr 198.18.1.10 meta mark set mark and 0xff\n", file: "f") }
        #expect(throws: ConfigurationError.self) { try MarkRules.file("tcp dport 80 tcp dport 81 meta mark set 1\n", file: "f") }
        #expect(throws: ConfigurationError.self) { try MarkRules.file("ip daddr 198.18.1.300 meta mark set 1\n", file: "f") }
    }

    @Test func theControlPlaneClassifiesByTheMarksFilesThenTheRuleset() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lvs-marks-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let rules = dir.appendingPathComponent("rules")
        let marks = dir.appendingPathComponent("marks")
        try "-A -f 1 -s rr\n-a -f 1 -r 198.19.0.2:0 -m\n-A -f 2 -s rr\n-a -f 2 -r 198.19.0.3:0 -m\n".write(to: rules, atomically: true, encoding: .utf8)
        try "ip daddr 198.18.1.10 tcp dport 80 meta mark set 1\n".write(to: marks, atomically: true, encoding: .utf8)
        let plane = ControlPlane(
            capacity: 64, sources: ConfigurationSources(rules: [rules.path], marks: [marks.path]),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try plane.reload()
        func owned() -> Set<String> { Set(plane.engines[0].director.withLock { $0.ownedAddresses }.map(\.description)) }
        #expect(owned() == ["198.18.1.10"])
        // A broken marks file changes nothing.
        try "ip daddr 198.18.1.11 meta mark set 1\nip daddr != 198.18.1.12 meta mark set 1\n".write(to: marks, atomically: true, encoding: .utf8)
        #expect(throws: ConfigurationError.self) { try plane.reload() }
        #expect(owned() == ["198.18.1.10"])
        // The ruleset's rules come after the file's: its VIP for mark 2 is owned too.
        plane.readNftablesMarks(
            MarkRules.nftables(
                "table ip t {\n\tchain c {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\t\tip daddr 198.18.1.20 meta mark set 0x2\n\t}\n}\n"
            ))
        #expect(owned() == ["198.18.1.10", "198.18.1.20"])
        let published = plane.state.withLock { $0.markRules }
        #expect(published.map(\.mark) == [1, 2] && published.map(\.chain) == [0, 1] && published.map(\.rule) == [0, 1])
    }

    @Test func rangesSplitIntoTheFewestPrefixes() {
        func r(_ a: String, _ b: String) -> [String]? {
            MarkRuleMatch.rangePrefixes(address(a), address(b))?.map { "\($0.address)/\($0.length)" }
        }
        #expect(r("198.18.0.0", "198.18.0.255") == ["198.18.0.0/24"])
        #expect(r("198.18.0.1", "198.18.0.6") == ["198.18.0.1/32", "198.18.0.2/31", "198.18.0.4/31", "198.18.0.6/32"])
        #expect(r("198.18.0.5", "198.18.0.5") == ["198.18.0.5/32"])
        #expect(r("198.18.0.9", "198.18.0.5") == nil)
        #expect(r("198.18.0.1", "198.19.255.254")?.count == 32)
        // Ranges differ only in the low 64 bits of an IPv6 address.
        #expect(r("2001:db8::1", "2001:db8::3") == ["2001:db8::1/128", "2001:db8::2/127"])
        #expect(r("2001:db8::1", "2001:db8:0:1::1") == nil)
    }
}
