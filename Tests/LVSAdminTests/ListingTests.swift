import LVSCore
import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol

/// Lines with their trailing spaces removed: ipvsadm's reference examples
/// are quoted that way.
func trimmed(_ s: String) -> String {
    s.split(separator: "\n", omittingEmptySubsequences: false).map { line in
        var l = Substring(line)
        while l.last == " " { l = l.dropLast() }
        return String(l)
    }.joined(separator: "\n")
}

/// The table of ipvsadm's reference examples (ipvs.md §5).
func referenceSnapshot() -> TableSnapshot {
    var web = ServiceSnapshot(service: ServiceSpec(key: .address(.tcp, ip("192.168.0.100"), 80), scheduler: "wlc", persistence: 360, netmask: 24))
    var rs = ServerSnapshot(server: RealServerConfiguration(address: ip("10.0.0.11"), port: 8080, weight: 3, method: .nat))
    rs.activeConnections = 42
    rs.inactiveConnections = 117
    rs.stats = Statistics()
    rs.stats.connections = 923_456
    rs.stats.inPackets = 73_987_654
    rs.stats.outPackets = 65_432_100
    rs.stats.inBytes = 5_765_123_456
    rs.stats.outBytes = 92_345_678_901
    rs.rates.connectionsPerSecond = 160
    rs.rates.inPacketsPerSecond = 13660
    rs.rates.outPacketsPerSecond = 12399
    rs.rates.inBytesPerSecond = 1_082_408
    rs.rates.outBytesPerSecond = 18_842_592
    web.servers = [rs]
    web.stats.connections = 1_234_567
    web.stats.inPackets = 98_765_432
    web.stats.outPackets = 87_654_321
    web.stats.inBytes = 7_654_321_000
    web.stats.outBytes = 123_456_789_012
    web.rates.connectionsPerSecond = 213
    web.rates.inPacketsPerSecond = 18211
    web.rates.outPacketsPerSecond = 16532
    web.rates.inBytesPerSecond = 1_443_210
    web.rates.outBytesPerSecond = 25_123_456
    var dns = ServiceSnapshot(service: ServiceSpec(key: .address(.udp, ip("192.168.0.100"), 53), scheduler: "sh", schedulerFlags: [.flag1, .flag2]))
    var d = ServerSnapshot(server: RealServerConfiguration(address: ip("10.0.1.21"), port: 53, weight: 1, method: .directRouting))
    d.inactiveConnections = 312
    dns.servers = [d]
    return TableSnapshot(connectionTableSize: 4096, services: [dns, web], timeouts: Timeouts(tcp: 900, tcpFin: 120, udp: 300))
}

@Suite struct ListingTests {
    let numeric = Listing(format: .numeric, hostName: { _ in nil }, portName: { _, _ in nil })

    @Test func listNumericIsIpvsadms() {
        let out = numeric.all(referenceSnapshot())
        #expect(
            trimmed(out) == """
                IP Virtual Server version 1.2.1 (size=4096)
                Prot LocalAddress:Port Scheduler Flags
                  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
                TCP  192.168.0.100:80 wlc persistent 360 mask 255.255.255.0
                  -> 10.0.0.11:8080               Masq    3      42         117
                UDP  192.168.0.100:53 sh (sh-fallback,sh-port)
                  -> 10.0.1.21:53                 Route   1      0          312

                """)
        // Columns are padded, trailing spaces included, exactly as printf pads them.
        #expect(out.contains("  -> 10.0.0.11:8080               Masq    3      42         117       \n"))
    }

    @Test func statsUseTheLargeNumberRule() {
        var f = numeric
        f.format.insert(.stats)
        #expect(
            trimmed(f.all(referenceSnapshot())).contains(
                """
                Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
                  -> RemoteAddress:Port
                TCP  192.168.0.100:80              1234567 98765432 87654321    7654M     123G
                  -> 10.0.0.11:8080                 923456 73987654 65432100    5765M   92345M

                """))
    }

    @Test func largeNumberBoundaries() {
        #expect(Listing.largeNumber(99_999_999, exact: false) == " 99999999")
        #expect(Listing.largeNumber(100_000_000, exact: false) == "  100000K")
        #expect(Listing.largeNumber(999_999_999, exact: false) == "  999999K")
        #expect(Listing.largeNumber(1_000_000_000, exact: false) == "    1000M")
        #expect(Listing.largeNumber(99_999_999_999, exact: false) == "   99999M")
        #expect(Listing.largeNumber(100_000_000_000, exact: false) == "     100G")
        #expect(Listing.largeNumber(99_999_999_999_999, exact: false) == "   99999G")
        #expect(Listing.largeNumber(100_000_000_000_000, exact: false) == "     100T")
        // --exact: at least 9 wide, else one space before the digits.
        #expect(Listing.largeNumber(12, exact: true) == "       12")
        #expect(Listing.largeNumber(123_456_789_012, exact: true) == " 123456789012")
    }

    @Test func exactStats() {
        var f = numeric
        f.format.formUnion([.stats, .exact])
        #expect(f.all(referenceSnapshot()).contains("TCP  192.168.0.100:80              1234567 98765432 87654321 7654321000 123456789012\n"))
    }

    @Test func rateRowsOfServersUsePlainColumns() {
        var f = numeric
        f.format.insert(.rate)
        #expect(
            trimmed(f.all(referenceSnapshot())).contains(
                """
                Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
                  -> RemoteAddress:Port
                TCP  192.168.0.100:80                  213    18211    16532  1443210 25123456
                  -> 10.0.0.11:8080                    160    13660    12399  1082408 18842592

                """))
    }

    @Test func thresholdsPersistentConnAndTunnelInfo() {
        var s = referenceSnapshot()
        s.services[1].servers[0].server.upperThreshold = 100
        s.services[1].servers[0].server.lowerThreshold = 50
        s.services[1].servers[0].persistentConnections = 7
        s.services[0].servers[0].server = RealServerConfiguration(
            address: ip("10.0.1.21"), port: 53, weight: 1, method: .tunnel,
            tunnel: TunnelConfiguration(type: .gue, port: 6080, checksum: .checksum))
        var f = numeric
        f.format = [.numeric, .thresholds]
        #expect(f.all(s).contains("Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"))
        #expect(f.all(s).contains("  -> 10.0.0.11:8080               100        50         42         117       \n"))
        f.format = [.numeric, .persistentConnections]
        #expect(f.all(s).contains("Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n"))
        #expect(f.all(s).contains("  -> 10.0.0.11:8080               3         7           42         117       \n"))
        f.format = [.numeric, .tunnelInfo]
        #expect(f.all(s).contains("  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"))
        #expect(f.all(s).contains("  -> 10.0.1.21:53                 Tunnel  gue:6080:+c   1      0          312       \n"))
        #expect(f.all(s).contains("  -> 10.0.0.11:8080               Masq    n/a           3      42         117       \n"))
    }

    @Test func connectionsTimeoutAndSave() {
        let conns = [
            ConnectionEntry(
                proto: "TCP", client: ip("203.0.113.7"), clientPort: 51234, virtual: ip("192.168.0.100"), virtualPort: 80,
                real: ip("10.0.0.11"), realPort: 8080, state: "ESTABLISHED", expires: 897, template: false),
            ConnectionEntry(
                proto: "TCP", client: ip("203.0.113.0"), clientPort: 0, virtual: ip("192.168.0.100"), virtualPort: 80,
                real: ip("10.0.0.11"), realPort: 8080, state: "NONE", expires: 322, template: true),
            ConnectionEntry(
                proto: "UDP", client: ip("198.51.100.5"), clientPort: 33000, virtual: ip("192.168.0.100"), virtualPort: 53,
                real: ip("10.0.1.21"), realPort: 53, state: "UDP", expires: 283, template: false),
        ]
        #expect(
            trimmed(numeric.connections(conns)) == """
                IPVS connection entries
                pro expire state       source             virtual            destination
                TCP 14:57  ESTABLISHED 203.0.113.7:51234  192.168.0.100:80   10.0.0.11:8080
                TCP 05:22  NONE        203.0.113.0:0      192.168.0.100:80   10.0.0.11:8080
                UDP 04:43  UDP         198.51.100.5:33000 192.168.0.100:53   10.0.1.21:53

                """)
        #expect(Listing.timeouts(Timeouts(tcp: 900, tcpFin: 120, udp: 300)) == "Timeout (tcp tcpfin udp): 900 120 300\n")
        var s = referenceSnapshot()
        s.services[0].servers[0].server = RealServerConfiguration(
            address: ip("10.0.1.22"), port: 53, weight: 0, method: .tunnel,
            tunnel: TunnelConfiguration(type: .gue, port: 6080, checksum: .none))
        s.services[0].service.schedulerFlags = []
        var f = numeric
        f.format.insert(.rule)
        #expect(
            f.all(s) == """
                -A -t 192.168.0.100:80 -s wlc -p 360 -M 255.255.255.0
                -a -t 192.168.0.100:80 -r 10.0.0.11:8080 -m -w 3
                -A -u 192.168.0.100:53 -s sh
                -a -u 192.168.0.100:53 -r 10.0.1.22:53 -i -w 0 --tun-type gue --tun-port 6080 --tun-nocsum

                """)
    }

    @Test func sortingFollowsTheKernelComparisonWrapAndAll() {
        func svc(_ k: ServiceKey) -> ServiceSnapshot { ServiceSnapshot(service: ServiceSpec(key: k, persistence: 1)) }
        let s = TableSnapshot(
            connectionTableSize: 1,
            services: [
                svc(.firewallMark(3, ipv6: false)), svc(.address(.udp, ip("10.0.0.1"), 53)), svc(.address(.tcp, ip("2001:db8::1"), 80)),
                svc(.address(.tcp, ip("10.0.0.1"), 80)), svc(.address(.tcp, ip("200.0.0.1"), 80)), svc(.address(.tcp, ip("10.0.0.1"), 8)),
            ], timeouts: Timeouts(tcp: 1, tcpFin: 1, udp: 1))
        let lines = numeric.all(s).split(separator: "\n").dropFirst(3).map { $0.split(separator: " ").prefix(2).joined(separator: " ") }
        // IPv4 before IPv6, TCP before UDP, marks last; 200.0.0.1 sorts before 10.0.0.1
        // because ipvsadm compares by the sign of the 32-bit difference.
        #expect(lines == ["TCP 200.0.0.1:80", "TCP 10.0.0.1:8", "TCP 10.0.0.1:80", "UDP 10.0.0.1:53", "TCP [2001:db8::1]:80", "FWM 3"])
        var unsorted = numeric
        unsorted.format.insert(.noSort)
        #expect(unsorted.all(s).split(separator: "\n")[3].hasPrefix("FWM  3"))
    }

    @Test func namesWhenNotNumericAndTruncation() {
        var s = referenceSnapshot()
        s.services = [s.services[1]]
        let named = Listing(
            format: [], hostName: { $0 == ip("10.0.0.11") ? "a-rather-long-real-server-name.example" : "vip.example" },
            portName: { p, _ in p == 80 ? "http" : nil })
        let out = named.all(s)
        // Service names are cut at 33 characters, server names at 28 (IPv4).
        #expect(out.contains("\nTCP  vip.example:http wlc persistent 360 mask 255.255.255.0\n"))
        #expect(out.contains("\n  -> a-rather-long-real-server-na Masq    3      42         117       \n"))
    }
}
