import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// lvsd's firewall-mark classifier, as netfilter's prerouting chains and
/// IPVS's service lookup run together: every rule in order, the last mark
/// set wins, a verdict ends its chain, and a marked frame's firewall-mark
/// service comes before an address service (`ip_vs_service_find`).
@Suite(.serialized) struct FirewallMarkTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")

    func service(_ key: ServiceKey, _ servers: [String], persistence: UInt32 = 0) -> VirtualServiceConfiguration {
        VirtualServiceConfiguration(
            key: key, scheduler: "rr", persistence: persistence,
            realServers: servers.map { RealServerConfiguration(address: ip($0), port: 0, method: .nat) })
    }

    /// Where a SYN from `src:sport` to `dst:dport` goes: the destination address and port out, or nil (passed).
    func syn(_ h: inout Harness, dport: UInt16, sport: UInt16 = 40000, src: IPAddress? = nil, dst: IPAddress? = nil, interface: UInt16 = 1) -> String? {
        let s = src ?? client
        let d = dst ?? vip
        let (v, out) = h.send(h.builder.frame(src: s, dst: d, FrameBuilder.tcp(sport: sport, dport: dport, flags: 0x02)), interface: interface)
        guard case .transmit = v else { return nil }
        if s.isIPv6 { return "\(IPv6Address(out.span, at: 38)):\(be16(out, 56))" }
        return "\(out[30]).\(out[31]).\(out[32]).\(out[33]):\(be16(out, 36))"
    }

    @Test func aMarkedFrameGoesToItsMarkServiceBeforeTheAddressService() {
        var h = Harness(
            [service(.firewallMark(1, ipv6: false), ["198.19.0.2"]), service(.address(.tcp, vip, 80), ["198.19.0.4"])],
            markRules: [
                FirewallMarkRule(mark: 1, proto: .tcp, destination: vip, ports: 80...80),
                FirewallMarkRule(mark: 1, proto: .tcp, destination: vip, ports: 443...443),
            ])
        #expect(syn(&h, dport: 80) == "198.19.0.2:80")
        #expect(syn(&h, dport: 443, sport: 40001) == "198.19.0.2:443")
        #expect(syn(&h, dport: 8080) == nil)
        #expect(h.director.service(.firewallMark(1, ipv6: false))?.counters.connections == 2)
        #expect(h.director.service(.address(.tcp, vip, 80))?.counters.connections == 0)
    }

    @Test func persistenceHoldsAClientAcrossThePortsOfOneMark() {
        var h = Harness(
            [service(.firewallMark(1, ipv6: false), ["198.19.0.2", "198.19.0.3", "198.19.0.4"], persistence: 300)],
            markRules: [80, 443].map { FirewallMarkRule(mark: 1, proto: .tcp, destination: vip, ports: $0...$0) })
        let web = syn(&h, dport: 80)
        let tls = syn(&h, dport: 443, sport: 40001)
        #expect(web != nil && web?.dropLast(3) == tls?.dropLast(4))
        // Another client: rr goes on to the next server, for both its ports.
        let other = ip("198.18.0.101")
        let web2 = syn(&h, dport: 80, src: other)
        #expect(web2?.dropLast(3) != web?.dropLast(3) && syn(&h, dport: 443, sport: 40001, src: other)?.dropLast(4) == web2?.dropLast(3))
    }

    @Test func theLastMarkWinsAndAVerdictEndsItsChain() {
        let services = [service(.firewallMark(1, ipv6: false), ["198.19.0.2"]), service(.firewallMark(2, ipv6: false), ["198.19.0.3"])]
        let everything = FirewallMarkRule(mark: 1, chain: 0, rule: 0, destination: vip)
        let tls = FirewallMarkRule(mark: 2, chain: 0, rule: 1, proto: .tcp, destination: vip, ports: 443...443)
        var h = Harness(services, markRules: [everything, tls])
        #expect(syn(&h, dport: 443) == "198.19.0.3:443")
        #expect(syn(&h, dport: 80) == "198.19.0.2:80")
        // accept after the first mark: the rest of chain 0 does not run, a later chain does.
        var accepting = everything
        accepting.verdict = .endChain
        var later = tls
        later.chain = 1
        h = Harness(services, markRules: [accepting, tls])
        #expect(syn(&h, dport: 443) == "198.19.0.2:443")
        h = Harness(services, markRules: [accepting, later])
        #expect(syn(&h, dport: 443) == "198.19.0.3:443")
        // drop: no service at all.
        h = Harness(services, markRules: [everything, FirewallMarkRule(mark: nil, verdict: .drop, rule: 1, source: client)])
        #expect(syn(&h, dport: 80) == nil && syn(&h, dport: 80, src: ip("198.18.0.101")) == "198.19.0.2:80")
        // Mark 0 set again, or a mark without a service: no service.
        h = Harness(services, markRules: [everything, FirewallMarkRule(mark: 0, rule: 1, ports: 80...80), FirewallMarkRule(mark: 9, rule: 2, ports: 81...81)])
        #expect(syn(&h, dport: 80) == nil && syn(&h, dport: 81) == nil && syn(&h, dport: 82) == "198.19.0.2:82")
    }

    @Test func rulesMatchInterfaceSourcePortsAndFamily() {
        var h = Harness(
            [service(.firewallMark(1, ipv6: false), ["198.19.0.2"]), service(.firewallMark(1, ipv6: true), ["2001:db8:1::2"])],
            markRules: [
                FirewallMarkRule(mark: 1, rule: 0, source: ip("198.18.0.0"), sourcePrefixLength: 24, sourcePorts: 1024...2047, interface: 1),
                FirewallMarkRule(mark: 1, rule: 1, ipv6: true, proto: .tcp),
            ])
        #expect(syn(&h, dport: 80, sport: 1500) == "198.19.0.2:80")
        #expect(syn(&h, dport: 80, sport: 3000) == nil)
        #expect(syn(&h, dport: 80, sport: 1501, interface: 2) == nil)
        #expect(syn(&h, dport: 80, sport: 1502, src: ip("198.18.1.100")) == nil)
        // FWM 1 IPv6 is its own service, as the kernel keeps it.
        #expect(syn(&h, dport: 80, src: ip("2001:db8::100"), dst: ip("2001:db8::10")) == "2001:db8:1::2:80")
        #expect(h.director.service(.firewallMark(1, ipv6: true))?.counters.connections == 1)
    }

    @Test func theDestinationsOfAMarkWithAServiceAreOwned() {
        let h = Harness(
            [service(.firewallMark(1, ipv6: false), ["198.19.0.2"])],
            markRules: [
                FirewallMarkRule(mark: 1, destination: vip), FirewallMarkRule(mark: 1, destination: ip("198.18.5.0"), destinationPrefixLength: 30),
                FirewallMarkRule(mark: 1, destination: ip("198.18.6.0"), destinationPrefixLength: 16),
                FirewallMarkRule(mark: 2, destination: ip("198.18.0.11")),
            ])
        #expect(
            Set(h.director.ownedAddresses) == Set(["198.18.0.10", "198.18.5.0", "198.18.5.1", "198.18.5.2", "198.18.5.3"].map(ip)))
    }
}
