import Foundation
import LVSCore
import LVSPacket
import LVSTestSupport
import Logging
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon
@testable import LVSSystem

/// A rules file that uses every option `-S` can write.
let everyOptionRules = """
    # comments and blank lines are skipped
    -A -t 198.18.0.10:80 -s wlc -p 600 -M 255.255.255.0
    -a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m -w 3 -x 100 -y 50
    -a -t 198.18.0.10:80 -r 198.19.0.3:8080 -m -w 0
    -A -u 198.18.0.10:53 -s sh -b sh-fallback,sh-port
    -a -u 198.18.0.10:53 -r 198.19.0.4:53 -i -w 2 --tun-type gue --tun-port 6080 --tun-csum
    -a -u 198.18.0.10:53 -r 198.19.0.5:53 -i -w 1 --tun-type ipip
    -a -u 198.18.0.10:53 -r 198.19.0.6:53 -g -w 1
    -A -u 198.18.0.11:5060 -s rr -p 60 --pe sip -o
    -A --sctp-service 198.18.0.12:38412 -s mh -b mh-port
    -A -f 7 -s wrr -p 360
    -a -f 7 -r 198.19.0.7:0 -g -w 5
    -A -f 8 -6 -s lc -p 360 -M 64
    -A -t [2001:db8::10]:443 -s nq
    -a -t [2001:db8::10]:443 -r [2001:db8:1::2]:8443 -b -w 1
    --add-laddr -t [2001:db8::10]:443 -z 2001:db8:1::100
    ipvsadm -A -t 198.18.0.13:80 -s twos
    -A -t 198.18.0.14:80 -s rr -j enable
    -a -t 198.18.0.14:80 -r 198.19.0.8:8080 -m -w 1
    -A -t 198.18.0.15:80 -s rr --proxy-protocol v2-insecure
    -a -t 198.18.0.15:80 -r 198.19.0.9:8080 -m -w 1
    """

@Suite struct ConfigurationTests {
    func table(_ rules: String) throws -> ServiceTable {
        var t = ServiceTable()
        for (_, ops) in try RulesFile.parse(rules, file: "rules") { try t.apply(ops) }
        return t
    }

    func snapshot(_ t: ServiceTable) -> TableSnapshot {
        TableSnapshot(
            connectionTableSize: 1,
            services: t.services.map { s in
                ServiceSnapshot(
                    service: ServiceSpec(
                        key: s.key, scheduler: s.scheduler, schedulerFlags: s.schedulerFlags, persistence: s.persistence,
                        netmask: s.persistenceNetmask, persistenceEngine: s.persistenceEngine, onePacket: s.onePacket,
                        synproxy: s.synproxy, proxyProtocol: s.proxyProtocol),
                    servers: s.realServers.map { ServerSnapshot(server: $0) }, localAddresses: s.localAddresses)
            }, timeouts: Timeouts(t.timeouts))
    }

    @Test func saveThenRestoreGivesTheSameTable() throws {
        let t = try table(everyOptionRules)
        #expect(t.services.count == 10)
        let saved = Listing(format: [.rule, .numeric]).all(snapshot(t))
        let again = try table(saved)
        #expect(Set(again.services) == Set(t.services))
        #expect(Listing(format: [.rule, .numeric]).all(snapshot(again)) == saved)
        #expect(saved.contains("-A -u 198.18.0.11:5060 -s rr -p 60 --pe sip -o\n"))
        #expect(saved.contains("-a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m -w 3 -x 100 -y 50\n"))
        #expect(saved.contains("-A -f 8 -6 -s lc -p 360 -M 64\n"))
        #expect(saved.contains("-A -t 198.18.0.14:80 -s rr -j enable\n"))
        #expect(saved.contains("-A -t 198.18.0.15:80 -s rr --proxy-protocol v2-insecure\n"))
        #expect(Listing(format: [.numeric]).all(snapshot(t)).contains("TCP  198.18.0.15:80 rr ppv2-insecure\n"))
        #expect(String(decoding: try JSONEncoder().encode(snapshot(t).services[9].service), as: UTF8.self).contains(#""proxyProtocol":"v2-insecure""#))
        #expect(saved.contains("--add-laddr -t [2001:db8::10]:443 -z 2001:db8:1::100\n"))
    }

    @Test func aBadRuleNamesFileLineAndKeyword() {
        #expect(throws: ConfigurationError(file: "rules", line: 2, keyword: "-a", message: "illegal weight specified")) {
            _ = try RulesFile.parse("-A -t 198.18.0.10:80\n-a -t 198.18.0.10:80 -r 198.19.0.2 -w x", file: "rules")
        }
        #expect(throws: ConfigurationError(file: "rules", line: 1, keyword: "-L", message: "not a table command")) {
            _ = try RulesFile.parse("-L -n", file: "rules")
        }
    }

    static let keepalived = """
        ! Configuration File for keepalived
        global_defs {
           router_id LVS_TEST
           lvs_timeouts tcp 7200 tcpfin 60 udp 120
        }
        vrrp_instance VI_1 {
            state MASTER
            interface eth0
            virtual_router_id 51
            priority 150
            virtual_ipaddress {
                198.18.0.10
            }
        }
        virtual_server_group WEB {
            198.18.0.20-21 80
            fwmark 9
        }
        local_address_group LIPS {
            198.19.1.1-2
        }
        virtual_server 198.18.0.10 80 {
            delay_loop 6
            lb_algo wrr
            lb_kind NAT
            persistence_timeout 50
            persistence_granularity 255.255.255.0
            protocol TCP
            proxy_protocol v1
            sorry_server 198.19.0.99 8080
            real_server 198.19.0.2 8080 {
                weight 3
                uthreshold 100
                lthreshold 10
                inhibit_on_failure
                HTTP_GET {
                    url {
                      path /healthz
                      status_code 200
                    }
                    url {
                      path /index.html
                      digest 9B3A0C85A887A256D6939DA88AABD8CD
                      status_code 200-299 304
                    }
                    connect_timeout 3
                    retry 3
                    delay_before_retry 3
                }
            }
            real_server 198.19.0.3 8080 {
                weight 1
                TCP_CHECK {
                    connect_port 8080
                }
            }
        }
        virtual_server 198.18.0.11 53 {
            lvs_sched mh
            mh-port
            lvs_method TUN type gue port 6080 csum
            protocol UDP
            real_server 198.19.0.4 53 {
                MISC_CHECK {
                    misc_path "/usr/local/bin/check-dns 198.19.0.4"
                    misc_dynamic
                }
            }
        }
        virtual_server group WEB {
            lb_algo rr
            lb_kind FNAT
            laddr_group_name LIPS
            persistence_timeout 30
            proxy_protocol v2
            real_server 198.19.0.5 80 {
                weight 2
            }
        }
        """

    @Test func keepalivedVirtualServersBecomeServices() throws {
        let config = try KeepalivedConfiguration.parse(Self.keepalived, file: "keepalived.conf")
        var t = ServiceTable()
        for (_, ops) in config.operations { try t.apply(ops) }
        #expect(t.timeouts[.established] == 7200 && t.timeouts[.finWait] == 60 && t.timeouts[.udp] == 120)
        let web = try #require(t.service(.address(.tcp, ip("198.18.0.10"), 80)))
        #expect(web.scheduler == "wrr" && web.persistence == 50 && web.persistenceNetmask == 24 && web.proxyProtocol == ProxyProtocol(version: .v1))
        #expect(
            web.realServers == [
                RealServerConfiguration(address: ip("198.19.0.2"), port: 8080, weight: 3, method: .nat, upperThreshold: 100, lowerThreshold: 10),
                RealServerConfiguration(address: ip("198.19.0.3"), port: 8080, weight: 1, method: .nat),
            ])
        let dns = try #require(t.service(.address(.udp, ip("198.18.0.11"), 53)))
        #expect(dns.scheduler == "mh" && dns.schedulerFlags == .flag2)
        #expect(dns.realServers.first?.tunnel == TunnelConfiguration(type: .gue, port: 6080, checksum: .checksum))
        // A group expands to each member, FNAT with its local address group.
        for key in [ServiceKey.address(.tcp, ip("198.18.0.20"), 80), .address(.tcp, ip("198.18.0.21"), 80), .firewallMark(9, ipv6: false)] {
            let s = try #require(t.service(key))
            #expect(s.realServers.first?.method == .fullNAT && s.localAddresses == [ip("198.19.1.1"), ip("198.19.1.2")])
            #expect(s.proxyProtocol == ProxyProtocol(version: .v2))
        }
        // Checks and VRRP are kept for the health-check and VRRP work.
        let vs = config.virtualServers[0]
        #expect(vs.sorryServer?.address == ip("198.19.0.99") && vs.delayLoop == 6)
        #expect(vs.realServers[0].inhibitOnFailure && vs.realServers[0].checks.first?.keyword == "HTTP_GET")
        #expect(vs.realServers[0].checks.first?.first("url")?.first("path")?.arguments == ["/healthz"])
        #expect(config.virtualServers[1].realServers[0].checks.first?.first("misc_path")?.arguments == ["/usr/local/bin/check-dns 198.19.0.4"])
        #expect(config.vrrpInstances.first?.first("virtual_router_id")?.arguments == ["51"])
    }

    /// Nothing ignored in silence: each keyword lvsd does not act on, with
    /// its line, why, and whether the file asks for something lvsd does not do.
    @Test func theAuditNamesWhatLvsdDoesNotDo() throws {
        let text = """
            global_defs {
                router_id LVS_DEVEL
            }
            linkbeat_interfaces {
                eth0
            }
            vrrp_instance VI_1 {
                interface eth0
                virtual_router_id 51
                authentication {
                    auth_type AH
                    auth_pass secret
                }
                unicast_peer {
                    198.18.0.2
                }
                track_interface {
                    eth1 weight -20
                }
                garp_master_delay 5
                virtual_ipaddress {
                    198.18.0.10
                }
            }
            virtual_server 198.18.0.10 25 {
                lb_kind NAT
                real_server 198.19.0.2 25 {
                    BFD_CHECK {
                        name f
                    }
                    HTTP_GET {
                        url {
                            path /
                            regex ok
                        }
                    }
                }
                sorry_server_inhibit
            }
            @high bogus_keyword
            """
        let notices = KeepalivedAudit.audit(try KeepalivedConfiguration.tokenizeAndNest(text, file: "k"), file: "k")
        #expect(
            notices.map { "\($0.line) \($0.keyword) \($0.unsupported)" } == [
                "2 router_id false", "4 linkbeat_interfaces true",
                "20 garp_master_delay false", "28 BFD_CHECK true", "34 regex true", "38 sorry_server_inhibit true", "40 @high true",
            ])
        #expect(notices[1].description == "k:4: linkbeat_interfaces: not supported: not watched")
        // The configuration the other tests use asks for nothing lvsd lacks.
        #expect(KeepalivedAudit.audit(try KeepalivedConfiguration.tokenizeAndNest(Self.keepalived, file: "k"), file: "k").filter(\.unsupported).isEmpty)
    }

    @Test func keepalivedCheckersBecomeHealthTargets() throws {
        let targets = try KeepalivedConfiguration.parse(Self.keepalived, file: "k").healthTargets(file: "k")
        #expect(targets.count == 3)
        let http = try #require(targets.first { $0.server.address == ip("198.19.0.2") })
        #expect(http.inhibitOnFailure && http.server.weight == 3 && http.services == [.address(.tcp, ip("198.18.0.10"), 80)])
        #expect(
            http.checks.count == 1
                && http.checks[0].kind
                    == .http(
                        [
                            HealthCheck.URLCheck(path: "/healthz", statuses: [200...200]),
                            HealthCheck.URLCheck(
                                path: "/index.html", statuses: [200...299, 304...304],
                                digest: "9b3a0c85a887a256d6939da88aabd8cd"),
                        ], tls: false)
        )
        // The service speaks PROXY protocol: so does its check, as an unknown source (DPVS's keepalived).
        #expect(http.checks[0].proxyProtocol == .v1 && http.checks[0].proxyPreamble == Array("PROXY UNKNOWN\r\n".utf8))
        #expect(http.checks[0].connectTimeout == 3 && http.checks[0].retry == 3 && http.checks[0].delayBeforeRetry == 3 && http.checks[0].delayLoop == 6)
        let tcp = try #require(targets.first { $0.server.address == ip("198.19.0.3") })
        #expect(!tcp.inhibitOnFailure && tcp.checks[0].kind == .tcp && tcp.checks[0].connectPort == 8080 && tcp.checks[0].connectTimeout == 5)
        let misc = try #require(targets.first { $0.server.address == ip("198.19.0.4") })
        #expect(misc.checks[0].kind == .misc(command: "/usr/local/bin/check-dns 198.19.0.4", timeout: 60, dynamic: true))
        // Without a checker a server is simply served (198.19.0.5).
        #expect(!targets.contains { $0.server.address == ip("198.19.0.5") })
    }

    @Test func quorumLostBringsTheSorryServerAndHysteresisHoldsItUntilRegained() throws {
        let conf = """
            virtual_server 198.18.0.10 80 {
                lb_kind NAT
                quorum 2
                hysteresis 1
                sorry_server 198.19.0.99 8080
                real_server 198.19.0.2 8080 { weight 1
                    TCP_CHECK { connect_timeout 1 } }
                real_server 198.19.0.3 8080 { weight 1
                    TCP_CHECK { connect_timeout 1 } }
                real_server 198.19.0.4 8080 { weight 1 }
            }
            """
        let config = try KeepalivedConfiguration.parse(conf, file: "k")
        let plane = ControlPlane(capacity: 64, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try plane.apply(config.operations.flatMap(\.operations))
        plane.resetHealth(quorum: config.quorumGroups)
        let targets = try config.healthTargets(file: "k")
        let key = ServiceKey.address(.tcp, ip("198.18.0.10"), 80)
        func servers() -> [String] { plane.table.service(key)!.realServers.map { "\($0.address)" } }
        #expect(servers() == ["198.19.0.2", "198.19.0.3", "198.19.0.4"])
        // The VIP is announced over BGP while the quorum holds, and withdrawn while it is lost.
        #expect(plane.routeVerdicts().map { "\($0.address) \($0.withheld ?? "announced")" } == ["198.18.0.10 announced"])
        plane.healthChanged(targets[0], up: false, detail: "refused")  // weight 2 left: quorum holds
        #expect(servers() == ["198.19.0.3", "198.19.0.4"])
        plane.healthChanged(targets[1], up: false, detail: "refused")  // weight 1 < 2: the sorry server serves
        #expect(servers() == ["198.19.0.4", "198.19.0.99"])
        #expect(plane.routeVerdicts().map { $0.withheld } == ["quorum lost"])
        plane.healthChanged(targets[1], up: true, detail: "")  // weight 2 < 2 + 1: it stays
        #expect(servers().contains("198.19.0.99"))
        plane.healthChanged(targets[0], up: true, detail: "")  // weight 3: it goes
        #expect(servers() == ["198.19.0.4", "198.19.0.3", "198.19.0.2"])
        #expect(plane.routeVerdicts().map { $0.withheld } == [nil])
        // A FULLNAT local address is announced with its service: the real servers' replies must find this director.
        try plane.apply([.addLocalAddress(key, ip("198.19.3.1"))])
        #expect(plane.routeVerdicts().map { "\($0.address) \($0.withheld ?? "announced")" } == ["198.18.0.10 announced", "198.19.3.1 announced"])
        // What BIRD includes: one static protocol per family, a blackhole route per VIP announced.
        #expect(
            BGPService.routeFile([ip("198.18.0.10"), ip("2001:db8::10")]) == """
                # The VIPs lvsd announces, rewritten as they change: export protocols lvsd4 and lvsd6.
                protocol static lvsd4 {
                    ipv4;
                    route 198.18.0.10/32 blackhole;
                }
                protocol static lvsd6 {
                    ipv6;
                    route 2001:db8::10/128 blackhole;
                }

                """)
        let health = plane.snapshot(connections: false).health
        #expect(health.count == 2 && health.allSatisfy(\.up))
    }

    @Test func keepalivedErrorsNameFileLineAndKeyword() {
        func error(_ text: String) -> ConfigurationError? {
            do {
                _ = try KeepalivedConfiguration.parse(text, file: "k.conf")
                return nil
            } catch { return error }
        }
        #expect(
            error("virtual_server 198.18.0.10 80 {\n  lb_algo bogus\n}")
                == ConfigurationError(file: "k.conf", line: 2, keyword: "lb_algo", message: "unknown scheduler 'bogus'"))
        #expect(error("virtual_server 198.18.0.10 80 {\n  lb_kind XX\n}")?.keyword == "lb_kind")
        #expect(
            error("virtual_server 198.18.0.10 80 {\n  real_server 198.19.0.2 80 {\n   weight 70000\n  }\n}")
                == ConfigurationError(file: "k.conf", line: 3, keyword: "weight", message: "expects a number in 0...65535"))
        #expect(
            error("virtual_server 198.18.0.10 80 {\n  real_server 198.19.0.2 80 {\n")
                == ConfigurationError(file: "k.conf", line: 2, keyword: "real_server", message: "block is never closed"))
        #expect(error("}")?.message == "'}' without a block to close")
        #expect(error("virtual_server 198.18.0.300 80 {\n}")?.message == "bad address '198.18.0.300'")
        #expect(error("virtual_server group NOPE {\n}")?.message == "unknown virtual_server_group 'NOPE'")
    }
}

@Suite struct ControlProtocolTests {
    @Test func roundTripAndRefusals() throws {
        let request = ControlRequest.apply([.addService(ServiceSpec(key: .address(.tcp, ip("198.18.0.10"), 80)))])
        let bytes = try ControlProtocol.encode(request)
        #expect(try ControlProtocol.decode(ControlRequest.self, from: Array(bytes.dropFirst(4))) == request)
        #expect(throws: ControlProtocol.DecodeError.unsupportedVersion(2)) {
            try ControlProtocol.decode(ControlRequest.self, from: Array(#"{"version":2,"body":{}}"#.utf8))
        }
        #expect(throws: ControlProtocol.DecodeError.self) { try ControlProtocol.decode(ControlRequest.self, from: [0x7B, 0x00]) }
    }

    @Test func theControlPlaneAnswersGarbageWithAnError() throws {
        let plane = ControlPlane(capacity: 1024, logger: .init(label: "test"))
        let reply = plane.handle(Array("not json".utf8))
        guard case .failed(let e) = try ControlProtocol.decode(ControlResponse.self, from: Array(reply.dropFirst(4))) else {
            Issue.record("expected an error")
            return
        }
        #expect(e.code == "EPROTO")
        // And still serves.
        guard case .done = plane.handle(.apply([.addService(ServiceSpec(key: .address(.tcp, ip("198.18.0.10"), 80)))])) else {
            Issue.record("expected done")
            return
        }
        #expect(plane.table.services.count == 1)
    }
}
