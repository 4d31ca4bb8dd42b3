import LVSCore
import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol

func parse(_ line: String) throws(UsageError) -> Invocation {
    try AdminCommandLine.parse(line.split(separator: " ").map(String.init))
}

func failure(_ line: String) -> UsageError? {
    do {
        _ = try parse(line)
        return nil
    } catch { return error }
}

@Suite struct CommandLineTests {
    @Test func defaultsAreIpvsadms() throws {
        let a = try parse("-A -t 198.18.0.10:80")
        #expect(a.command == .addService)
        #expect(a.service == ServiceSpec(key: .address(.tcp, ip("198.18.0.10"), 80), scheduler: "wlc"))
        let p = try parse("-A -t 198.18.0.10:80 -p")
        #expect(p.service?.persistence == 360 && p.service?.netmask == 32)
        let s = try parse("-a -t 198.18.0.10:80 -r 198.19.0.2:8080")
        // -g by default: DR takes the service's port whatever -r says.
        #expect(s.server == RealServerConfiguration(address: ip("198.19.0.2"), port: 80, weight: 1, method: .directRouting))
        let m = try parse("-a -t 198.18.0.10:80 -r 198.19.0.2 -m")
        #expect(m.server?.port == 80 && m.server?.method == .nat)
    }

    @Test func daemonOptionsAreKept() throws {
        let d = try parse("--start-daemon backup --mcast-interface eth1 --syncid 9 --mcast-group 239.0.0.1 --mcast-port 9000 --mcast-ttl 3 --sync-maxlen 1200")
        #expect(d.command == .startDaemon)
        #expect(
            d.syncDaemon == SyncDaemonConfiguration(role: .backup, interface: "eth1", syncID: 9, group: ip("239.0.0.1"), port: 9000, ttl: 3, maxLength: 1200))
        #expect(try parse("--start-daemon master").syncDaemon == SyncDaemonConfiguration(role: .master, interface: "eth0"))
        #expect(try parse("--stop-daemon backup").syncDaemon.role == .backup)
        #expect(failure("--start-daemon master --mcast-group 10.0.0.1")?.message == "illegal mcast-group specified")
        #expect(failure("--start-daemon master --syncid 256")?.message == "illegal syncid specified")
        #expect(failure("--start-daemon primary")?.message == "illegal start-daemon parameter specified")
        #expect(Listing.daemons([d.syncDaemon]) == "backup sync daemon (mcast=eth1, syncid=9, maxlen=1200, group=239.0.0.1, port=9000, ttl=3)\n")
    }

    @Test func popStyleClustersAndLongForms() throws {
        let l = try parse("-Ln")
        #expect(l.command == .list && l.format == .numeric)
        let t = try parse("-At198.18.0.10:80 -srr -p600 -M255.255.0.0")
        #expect(t.service == ServiceSpec(key: .address(.tcp, ip("198.18.0.10"), 80), scheduler: "rr", persistence: 600, netmask: 16))
        let long = try parse("--add-service --udp-service=[2001:db8::10]:53 --scheduler=sh --sched-flags=sh-port")
        #expect(long.service == ServiceSpec(key: .address(.udp, ip("2001:db8::10"), 53), scheduler: "sh", schedulerFlags: .flag2))
        let fw = try parse("-A -f 7 -6 -s mh -b mh-fallback -p 60 -M 64")
        #expect(fw.service == ServiceSpec(key: .firewallMark(7, ipv6: true), scheduler: "mh", schedulerFlags: .flag1, persistence: 60, netmask: 64))
        // lvsd's own: mh's table in address order, flag-3, listed by its name.
        let sorted = try parse("-A -t 198.18.0.10:80 -s mh -b mh-port,mh-sorted")
        #expect(sorted.service?.schedulerFlags == [.mhPort, .mhSorted])
        #expect(Listing.schedulerFlags(sorted.service!) == "mh-port,mh-sorted")
        let set = try parse("--set 100 20 30")
        #expect(set.command == .setTimeouts && set.timeouts == Timeouts(tcp: 100, tcpFin: 20, udp: 30))
        let gue = try parse("-a -u 198.18.0.10:53 -r 198.19.0.5 -i --tun-type gue --tun-port 6080 --tun-remcsum -w 0 -x 10 -y 5")
        #expect(
            gue.server
                == RealServerConfiguration(
                    address: ip("198.19.0.5"), port: 53, weight: 0, method: .tunnel, upperThreshold: 10,
                    lowerThreshold: 5, tunnel: TunnelConfiguration(type: .gue, port: 6080, checksum: .remote)))
        // DPVS: -b on a server is FULLNAT; -z and --add-laddr manage local addresses.
        let fnat = try parse("-a -t 198.18.0.10:80 -r 198.19.0.2:8080 -b")
        #expect(fnat.server?.method == .fullNAT && fnat.server?.port == 8080)
        let laddr = try parse("-P -z 198.19.1.1 -t 198.18.0.10:80")
        #expect(laddr.operations() == [.addLocalAddress(.address(.tcp, ip("198.18.0.10"), 80), ip("198.19.1.1"))])
    }

    @Test func wrongInputGetsIpvsadmsMessages() {
        let cases: [(String, String, Int32)] = [
            ("--bogus", "--bogus: unknown option", 255),
            ("-A -t 198.18.0.10:80 -L", "multiple commands specified", 2),
            ("-A -t 198.18.0.10:80 -s rr -s wlc", "multiple 'scheduler' options specified", 2),
            ("-L -c --stats", "options conflicts in the list command", 2),
            ("-L -c -t 198.18.0.10:80", "The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2),
            ("-A -t 198.18.0.10:80 -w 2", "Illegal 'weight' option with the 'add-service' command", 2),
            ("-a -t 198.18.0.10:80", "You need to supply the 'real-server' option for the 'add-server' command", 2),
            ("-A -t 198.18.0.300:80", "illegal virtual server address[:port] specified", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -w 65536", "illegal weight specified", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -w -1", "illegal weight specified", 2),
            ("-A -t 198.18.0.10:80 -s sh -b mh-port", "incompatible scheduler flag `mh-port'", 2),
            ("-A -t 198.18.0.10:80 -s sh -b mh-sorted", "incompatible scheduler flag `mh-sorted'", 2),
            ("-A -t 198.18.0.10:80 -b bogus", "invalid scheduler flag `bogus'", 2),
            ("-A -t 198.18.0.10:0", "Zero port specified for non-persistent service", 2),
            ("-A -t 198.18.0.10:53 -o", "One-Packet Scheduling is only for UDP virtual services", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -m --tun-type gue", "Tunnel options conflict with forward method", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -i --tun-port 1", "Illegal 'tun-port' option with the 'ipip' tunnel type", 2),
            (
                "-a -t 198.18.0.10:80 -r 198.19.0.2 -i --tun-type gue --tun-port 1 --tun-csum --tun-nocsum",
                "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type", 2
            ),
            ("-a -t 198.18.0.10:80 -r 2001:db8::2 -m", "Different address family is allowed only for tunneling servers", 2),
            ("-A -t 198.18.0.10:80 -p 0", "invalid timeout value `0' specified", 2),
            ("-A -t 198.18.0.10:80 -p -M 255.0.255.0", "illegal virtual server persistent mask specified", 2),
            ("-A -f 0", "invalid fwmark value `0' specified", 2),
            ("-A -6 -f 1", "-6 used before -f\n", 2),
            ("--set 1 2", "--set option requires 3 timeout values", 2),
            ("-L extra", "unexpected argument extra", 2),
            ("-n", "no command specified", 2),
            ("-A -t 198.18.0.10:80 -j on", "synproxy switch must be enable or disable", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -m -j enable", "Illegal 'synproxy' option with the 'add-server' command", 2),
            ("-A -t 198.18.0.10:80 --proxy-protocol v3", "proxy-protocol must be disable, v1, v2, v1-insecure or v2-insecure", 2),
            ("-a -t 198.18.0.10:80 -r 198.19.0.2 -m --proxy-protocol v1", "Illegal 'proxy-protocol' option with the 'add-server' command", 2),
        ]
        for (line, message, status) in cases {
            let e = failure(line)
            #expect(e == UsageError(message, exitStatus: status), "\(line)")
        }
    }

    @Test func tableRefusesWhatTheKernelRefuses() throws {
        var t = ServiceTable()
        let key = ServiceKey.address(.tcp, ip("198.18.0.10"), 80)
        try t.apply(.addService(ServiceSpec(key: key)))
        #expect(throws: TableError.serviceExists) { try t.apply(.addService(ServiceSpec(key: key))) }
        #expect(throws: TableError.schedulerNotFound) { try t.apply(.addService(ServiceSpec(key: .address(.tcp, ip("198.18.0.11"), 80), scheduler: "bogus"))) }
        #expect(throws: TableError.noSuchService) { try t.apply(.editService(ServiceSpec(key: .address(.udp, ip("198.18.0.10"), 80)))) }
        let rs = RealServerConfiguration(address: ip("198.19.0.2"), port: 80)
        try t.apply(.addServer(key, rs))
        #expect(throws: TableError.destinationExists) { try t.apply(.addServer(key, rs)) }
        #expect(throws: TableError.serviceNotDefined) { try t.apply(.addServer(.address(.udp, ip("198.18.0.10"), 80), rs)) }
        #expect(throws: TableError.noSuchDestination) { try t.apply(.deleteServer(key, address: ip("198.19.0.9"), port: 80)) }
        #expect(throws: TableError.thresholdRange) {
            try t.apply(.editServer(key, RealServerConfiguration(address: ip("198.19.0.2"), port: 80, upperThreshold: 5, lowerThreshold: 6)))
        }
        // All or nothing: the failing second operation leaves the first undone.
        let before = t
        #expect(throws: TableError.serviceExists) {
            try t.apply([.addService(ServiceSpec(key: .address(.udp, ip("198.18.0.10"), 53))), .addService(ServiceSpec(key: key))])
        }
        #expect(t == before)
        // The SYN proxy must see the replies: NAT or FULLNAT servers, TCP only.
        let proxied = ServiceKey.address(.tcp, ip("198.18.0.20"), 80)
        try t.apply(.addService(ServiceSpec(key: proxied, synproxy: true)))
        #expect(throws: TableError.synproxyMethod) { try t.apply(.addServer(proxied, RealServerConfiguration(address: ip("198.19.0.2"), port: 80))) }
        try t.apply(.addServer(proxied, RealServerConfiguration(address: ip("198.19.0.2"), port: 80, method: .nat)))
        #expect(throws: TableError.synproxyMethod) { try t.apply(.addService(ServiceSpec(key: .address(.udp, ip("198.18.0.20"), 53), synproxy: true))) }
        #expect(throws: TableError.synproxyMethod) { try t.apply(.editService(ServiceSpec(key: key, synproxy: true))) }
        // So must PROXY protocol, which shifts sequence numbers both ways.
        let pp = ProxyProtocol(version: .v2)
        #expect(throws: TableError.proxyProtocolMethod) { try t.apply(.editService(ServiceSpec(key: key, proxyProtocol: pp))) }
        #expect(throws: TableError.proxyProtocolMethod) {
            try t.apply(.addService(ServiceSpec(key: .address(.udp, ip("198.18.0.20"), 53), proxyProtocol: pp)))
        }
        try t.apply(.editService(ServiceSpec(key: proxied, proxyProtocol: pp)))
        #expect(t.service(proxied)?.proxyProtocol == pp)
    }

    /// `--compare`: two directors' `-S -n`, and where they differ.
    @Test func compareSaysWhereTwoDirectorsDiffer() throws {
        #expect(try parse("--compare -").command == .compare && parse("--compare /tmp/other").comparedWith == "/tmp/other")
        let here = """
            -A -t 198.18.0.10:80 -s mh -b mh-port,mh-sorted
            -a -t 198.18.0.10:80 -r 198.19.0.11:80 -g -w 1
            -a -t 198.18.0.10:80 -r 198.19.0.12:80 -g -w 1
            -A -t 198.18.0.11:80 -s mh
            -a -t 198.18.0.11:80 -r 198.19.0.11:80 -g -w 1
            -A -f 7 -6 -s rr
            """
        let there = """
            -A -t 198.18.0.10:80 -s mh -b mh-port
            -a -t 198.18.0.10:80 -r 198.19.0.11:80 -g -w 2
            -a -t 198.18.0.10:80 -r 198.19.0.13:80 -g -w 1
            -A -t 198.18.0.11:80 -s mh
            -a -t 198.18.0.11:80 -r 198.19.0.11:80 -g -w 1
            -A -t 198.18.0.12:443 -s wrr
            """
        let (differences, notes) = FleetComparison.differences(here: here, there: there)
        #expect(
            differences == [
                "-f 7 -6: only on this director",
                "-t 198.18.0.10:80: here \"-s mh -b mh-port,mh-sorted\", there \"-s mh -b mh-port\"",
                "-t 198.18.0.10:80 -r 198.19.0.11:80: here \"-g -w 1\", there \"-g -w 2\"",
                "-t 198.18.0.10:80 -r 198.19.0.12:80: only on this director",
                "-t 198.18.0.10:80 -r 198.19.0.13:80: only on the other director",
                "-t 198.18.0.12:443: only on the other director",
            ])
        #expect(notes == ["-t 198.18.0.11:80: mh without mh-sorted: directors that added its real servers in other orders send a flow to different ones"])
        #expect(FleetComparison.differences(here: here, there: here).differences.isEmpty)
    }
}
