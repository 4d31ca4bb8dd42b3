import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon
@testable import LVSSystem
@testable import LVSVRRP

/// VRRP advertisements byte by byte and the RFC 5798 state machine on a fake clock.
@Suite struct VRRPTests {
    func instance(priority: UInt8 = 100, version: Int = 3, preempt: Bool = true) -> VRRPInstanceConfiguration {
        var c = VRRPInstanceConfiguration(name: "VI_1")
        c.interface = "eth0"
        c.virtualRouterID = 51
        c.priority = priority
        c.addresses = [ip("198.19.0.10")]
        c.version = version
        c.preempt = preempt
        return c
    }

    @Test func version3CarriesCentisecondsAndAPseudoHeaderChecksum() throws {
        let a = VRRPAdvertisement(version: 3, virtualRouterID: 51, priority: 150, interval: 100, addresses: [ip("198.19.0.10")])
        let p = a.encode(source: IPv4Address("198.19.0.1")!)
        #expect(p.count == 20 + 12)
        #expect(Array(p[8..<10]) == [255, 112] && Array(p[16..<20]) == [224, 0, 0, 18] && Array(p[12..<16]) == [198, 19, 0, 1])
        #expect(Array(p[20..<26]) == [0x31, 51, 150, 1, 0x00, 100] && Array(p[28..<32]) == [198, 19, 0, 10])
        #expect(FrameBuilder.checksum(p, 0..<20) == 0)
        // Checksum over the pseudo-header (source, group, 0, 112, length) and the message.
        let pseudo = 0xC613 + 0x0001 + 0xE000 + 0x0012 + 112 + 12
        #expect(FrameBuilder.checksum(p, 20..<32, initial: UInt32(pseudo)) == 0)
        let (d, source) = try VRRPAdvertisement.decode(p)
        #expect(d == a && source == ip("198.19.0.1"))
    }

    @Test func overIPv6TheChecksumCoversTheIPv6PseudoHeader() throws {
        let a = VRRPAdvertisement(version: 3, virtualRouterID: 51, priority: 150, interval: 100, addresses: [ip("2001:db8:1::50")])
        let source = ip("fe80::1")
        let m = a.message(source: source)
        #expect(m.count == 8 + 16 && Array(m[0..<6]) == [0x31, 51, 150, 1, 0x00, 100] && Array(m[8..<24]) == FrameBuilder.addressBytes(ip("2001:db8:1::50")))
        // Pseudo-header: source, ff02::12, upper-layer length, next header 112.
        let pseudo = FrameBuilder.addressBytes(source) + FrameBuilder.addressBytes(ip("ff02::12")) + [0, 0, 0, 24, 0, 0, 0, 112]
        #expect(FrameBuilder.checksum(pseudo + m, 0..<(pseudo.count + m.count)) == 0)
        #expect(try VRRPAdvertisement.decode6(m, source: IPv6Address("fe80::1")!, hopLimit: 255) == a)
        #expect(throws: VRRPAdvertisement.DecodeError.ttl(64)) { try VRRPAdvertisement.decode6(m, source: IPv6Address("fe80::1")!, hopLimit: 64) }
        #expect(throws: VRRPAdvertisement.DecodeError.checksum) { try VRRPAdvertisement.decode6(m, source: IPv6Address("fe80::2")!, hopLimit: 255) }
        // Between equal priorities the higher address wins, IPv6 as IPv4.
        var r = VRRPRouter(instance(priority: 100), primaryAddress: ip("fe80::2"))
        _ = r.start(now: 0)
        _ = r.tick(now: 3609)
        var peer = a
        peer.priority = 100
        #expect(r.received(peer, from: ip("fe80::1"), now: 4000).isEmpty && r.state == .master)
        #expect(r.received(peer, from: ip("fe80::3"), now: 4000) == [.enter(.backup)] && r.master == ip("fe80::3"))
    }

    @Test func version2CarriesSecondsAndAuthenticationData() throws {
        let a = VRRPAdvertisement(version: 2, virtualRouterID: 7, priority: 100, interval: 300, addresses: [ip("198.19.0.10")])
        let p = a.encode(source: IPv4Address("198.19.0.2")!)
        #expect(p.count == 20 + 8 + 4 + 8 && Array(p[20..<26]) == [0x21, 7, 100, 1, 0, 3])
        #expect(FrameBuilder.checksum(p, 20..<p.count) == 0)
        #expect(try VRRPAdvertisement.decode(p).0 == a)
        var ttl = p
        ttl[8] = 64
        #expect(throws: VRRPAdvertisement.DecodeError.ttl(64)) { try VRRPAdvertisement.decode(ttl) }
        var bad = p
        bad[22] = 101
        #expect(throws: VRRPAdvertisement.DecodeError.checksum) { try VRRPAdvertisement.decode(bad) }
        #expect(throws: VRRPAdvertisement.DecodeError.truncated) { try VRRPAdvertisement.decode(Array(p.prefix(24))) }
    }

    @Test func aBackupTakesOverAfterThreeIntervalsAndSkew() {
        var r = VRRPRouter(instance(priority: 100), primaryAddress: ip("198.19.0.2"))
        #expect(r.start(now: 0) == [.enter(.backup)])
        // 3 × 1 s + (256 − 100) / 256 s = 3609 ms.
        #expect(r.masterDownInterval == 3609 && r.deadline == 3609)
        let master = VRRPAdvertisement(version: 3, virtualRouterID: 51, priority: 150, interval: 100, addresses: [])
        #expect(r.received(master, from: ip("198.19.0.1"), now: 1000).isEmpty)
        #expect(r.tick(now: 4608).isEmpty && r.state == .backup)
        #expect(r.tick(now: 4609) == [.advertise(priority: 100), .enter(.master)])
        #expect(r.tick(now: 5608).isEmpty && r.tick(now: 5609) == [.advertise(priority: 100)])
        // The higher router returns and preempts; equal priorities go to the higher address.
        #expect(r.received(master, from: ip("198.19.0.1"), now: 6000) == [.enter(.backup)])
        var peer = master
        peer.priority = 100
        var s = VRRPRouter(instance(priority: 100), primaryAddress: ip("198.19.0.2"))
        _ = s.start(now: 0)
        _ = s.tick(now: 3609)
        #expect(s.received(peer, from: ip("198.19.0.1"), now: 4000).isEmpty && s.state == .master)
        #expect(s.received(peer, from: ip("198.19.0.3"), now: 4000) == [.enter(.backup)])
    }

    /// A successor lvsd (a handover) starts an instance its predecessor was
    /// master of as master: it advertises at once, with no election.
    @Test func aSuccessorStartsAsMasterWhereItsPredecessorWas() {
        var r = VRRPRouter(instance(priority: 100), primaryAddress: ip("198.19.0.2"))
        #expect(r.start(now: 0, asMaster: true) == [.advertise(priority: 100), .enter(.master)])
        #expect(r.state == .master && r.deadline == 1000)
    }

    @Test func resigningMastersAndPreemptionRules() {
        // A master stopping sends priority 0: the backup waits only its skew.
        var r = VRRPRouter(instance(priority: 100), primaryAddress: ip("198.19.0.2"))
        _ = r.start(now: 0)
        let resign = VRRPAdvertisement(version: 3, virtualRouterID: 51, priority: 0, interval: 100, addresses: [])
        _ = r.received(resign, from: ip("198.19.0.1"), now: 1000)
        #expect(r.deadline == 1000 + 609)
        // Without preemption a higher backup leaves a lower master alone.
        var high = VRRPRouter(instance(priority: 200, preempt: false), primaryAddress: ip("198.19.0.3"))
        _ = high.start(now: 0)
        let low = VRRPAdvertisement(version: 3, virtualRouterID: 51, priority: 50, interval: 100, addresses: [])
        for t in stride(from: UInt64(500), to: 10_000, by: 1000) { _ = high.received(low, from: ip("198.19.0.1"), now: t) }
        #expect(high.tick(now: 10_000).isEmpty && high.state == .backup)
        // With it, the lower master's adverts are ignored and the timer runs out.
        var preempting = VRRPRouter(instance(priority: 200), primaryAddress: ip("198.19.0.3"))
        _ = preempting.start(now: 0)
        #expect(preempting.received(low, from: ip("198.19.0.1"), now: 500).isEmpty)
        #expect(preempting.tick(now: 3000 + 218) == [.advertise(priority: 200), .enter(.master)])
        // A fault gives mastership up with priority 0; recovery waits as a backup.
        #expect(preempting.fault() == [.advertise(priority: 0), .enter(.fault)])
        #expect(preempting.recover(now: 20_000) == [.enter(.backup)] && preempting.deadline == 20_000 + 3218)
        // Priority 255 owns the addresses: master at once.
        var owner = VRRPRouter(instance(priority: 255), primaryAddress: ip("198.19.0.3"))
        #expect(owner.start(now: 0) == [.advertise(priority: 255), .enter(.master)])
        #expect(owner.shutdown() == [.advertise(priority: 0)])
    }

    @Test func version2CarriesASimplePassword() throws {
        let secret = VRRPAuthentication(type: "PASS", pass: "secret")
        let a = VRRPAdvertisement(version: 2, virtualRouterID: 51, priority: 100, interval: 100, addresses: [ip("198.19.0.10")], authentication: secret)
        let m = a.message(source: ip("198.19.0.1"))
        // Type 1 (simple text), the 8 bytes after the addresses: the password, zero-padded.
        #expect(m[4] == 1 && Array(m[12..<20]) == Array("secret".utf8) + [0, 0])
        let (back, _) = try VRRPAdvertisement.decode(a.encode(source: IPv4Address("198.19.0.1")!))
        #expect(
            back.authenticates(secret) && !back.authenticates(VRRPAuthentication(type: "PASS", pass: "other")) && !back.authenticates(nil)
                && !back.authenticates(VRRPAuthentication(type: "AH", pass: "secret")))
        // None configured: an advertisement with a password is not ours either, and one without is.
        let plain = VRRPAdvertisement(version: 2, virtualRouterID: 51, priority: 100, interval: 100, addresses: [ip("198.19.0.10")])
        let (none, _) = try VRRPAdvertisement.decode(plain.encode(source: IPv4Address("198.19.0.1")!))
        #expect(none.authenticates(nil) && !none.authenticates(secret) && plain.message(source: ip("198.19.0.1"))[4] == 0)
        // keepalived keeps 8 bytes of a longer password; version 3 has none.
        let k = try KeepalivedConfiguration.parse(
            "vrrp_instance A {\n interface e\n virtual_router_id 1\n authentication {\n  auth_type PASS\n  auth_pass 0123456789\n }\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n",
            file: "k")
        #expect(try HighAvailabilityConfiguration.parse(k, file: "k").instances[0].authentication == .password(Array("01234567".utf8)))
        let k3 = try KeepalivedConfiguration.parse(
            "vrrp_instance A {\n interface e\n version 3\n virtual_router_id 1\n authentication {\n  auth_type PASS\n  auth_pass x\n }\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n",
            file: "k")
        #expect(try HighAvailabilityConfiguration.parse(k3, file: "k").instances[0].authentication == nil)
    }

    /// An advertisement keepalived 2.2.7 sent with `auth_type AH` and
    /// `auth_pass lvs-ah`, as captured: lvsd opens it, and seals the same
    /// advertisement to the same bytes.
    @Test func authenticationHeaderAsKeepalivedSendsIt() throws {
        let captured: [UInt8] = [
            0x45, 0xC0, 0x00, 0x40, 0x00, 0x01, 0x00, 0x00, 0xFF, 0x33, 0x14, 0xA0, 0xC6, 0x13, 0x00, 0x04, 0xE0, 0x00, 0x00, 0x12,
            // AH: next header 112, length 4, SPI = the source address, sequence 1, the ICV.
            0x70, 0x04, 0x00, 0x00, 0xC6, 0x13, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
            0x13, 0x28, 0x91, 0xD7, 0x5C, 0x21, 0xB7, 0x6C, 0xFE, 0x12, 0x6C, 0xF8,
            // VRRPv2: router 51, priority 100, auth type 2, 1 s, 198.19.0.50, 8 zero bytes.
            0x21, 0x33, 0x64, 0x01, 0x02, 0x01, 0xB2, 0x84, 0xC6, 0x13, 0x00, 0x32, 0, 0, 0, 0, 0, 0, 0, 0,
        ]
        let ah = VRRPAuthentication(type: "AH", pass: "lvs-ah")
        #expect(ah == .header(key: Array("lvs-ah".utf8) + [0, 0]))
        let (plain, sequence) = try VRRPAuthenticationHeader.open(captured, key: ah.key, unicast: false)
        let (a, source) = try VRRPAdvertisement.decode(plain)
        #expect(sequence == 1 && source == ip("198.19.0.4") && a.authenticates(ah) && !a.authenticates(nil))
        #expect(a == VRRPAdvertisement(version: 2, virtualRouterID: 51, priority: 100, interval: 100, addresses: [ip("198.19.0.50")], authentication: ah))
        let sealed = VRRPAuthenticationHeader.seal(
            a.encode(source: IPv4Address("198.19.0.4")!, identification: 1), key: ah.key, sequence: 1, unicast: false)
        #expect(sealed == captured)
        // Another key, a changed byte (the priority), an SPI that is not the source: refused.
        #expect(throws: VRRPAuthenticationHeader.Failure.integrity) {
            try VRRPAuthenticationHeader.open(captured, key: Array("other".utf8) + [0, 0, 0], unicast: false)
        }
        var raised = captured
        raised[46] = 200
        #expect(throws: VRRPAuthenticationHeader.Failure.integrity) { try VRRPAuthenticationHeader.open(raised, key: ah.key, unicast: false) }
        // The mutable fields are not covered: another TOS or TTL (for a unicast peer) still opens.
        var moved = VRRPAuthenticationHeader.seal(a.encode(source: IPv4Address("198.19.0.4")!, identification: 9), key: ah.key, sequence: 7, unicast: true)
        moved[1] = 0
        moved[8] = 64
        #expect(try VRRPAuthenticationHeader.open(moved, key: ah.key, unicast: true).sequence == 7)
        #expect(throws: VRRPAuthenticationHeader.Failure.integrity) { try VRRPAuthenticationHeader.open(moved, key: ah.key, unicast: false) }
        var spi = sealed
        spi[27] = 5
        #expect(throws: VRRPAuthenticationHeader.Failure.self) { try VRRPAuthenticationHeader.open(spi, key: ah.key, unicast: false) }
        #expect(throws: VRRPAuthenticationHeader.Failure.malformed) {
            try VRRPAuthenticationHeader.open(Array(captured.prefix(40)), key: ah.key, unicast: false)
        }
    }

    @Test func trackedScriptsMoveThePriorityOrFault() throws {
        let text = """
            vrrp_script up {
                script "/bin/true"
                interval 0.5
                weight 20
                rise 2
                fall 3
                init_fail
            }
            vrrp_script down {
                script "/usr/bin/test -e /run/lvs-down"
                weight -30
                timeout 2
                user nobody
            }
            vrrp_script vital {
                script "/bin/false"
            }
            vrrp_script unused {
                script "/bin/true"
            }
            vrrp_instance A {
                interface e
                virtual_router_id 1
                priority 100
                track_script {
                    up
                    down weight -40
                    vital
                }
                virtual_ipaddress {
                    198.19.0.10
                }
            }
            """
        let ha = try HighAvailabilityConfiguration.parse(try KeepalivedConfiguration.parse(text, file: "k"), file: "k")
        #expect(ha.scripts.map(\.name) == ["up", "down", "vital"])
        let up = ha.scripts[0]
        #expect(up.interval == 0.5 && up.timeout == 0.5 && up.weight == 20 && up.rise == 2 && up.fall == 3 && up.initiallyFailed)
        #expect(ha.scripts[1].user == "nobody" && ha.scripts[1].timeout == 2 && ha.scripts[1].command == "/usr/bin/test -e /run/lvs-down")
        #expect(ha.instances[0].trackScripts == [.init(name: "up", weight: nil), .init(name: "down", weight: -40), .init(name: "vital", weight: nil)])
        // keepalived's rule: a positive weight while OK, a negative one while failed, 0: failure is FAULT.
        #expect(VRRPScript.effect(weight: 20, ok: true) == (20, false) && VRRPScript.effect(weight: 20, ok: false) == (0, false))
        #expect(VRRPScript.effect(weight: -40, ok: false) == (-40, false) && VRRPScript.effect(weight: -40, ok: true) == (0, false))
        #expect(VRRPScript.effect(weight: 0, ok: false) == (0, true) && VRRPScript.effect(weight: 0, ok: true) == (0, false))
        var r = VRRPRouter(ha.instances[0], primaryAddress: ip("198.19.0.1"))
        r.priorityAdjustment = -140
        #expect(r.priority == 1)
        r.priorityAdjustment = 200
        #expect(r.priority == 254 && r.advertisement(priority: r.priority).priority == 254)
        // reverse turns it around: a positive weight subtracted while OK, a negative one added while failed, weight 0 a FAULT while OK.
        #expect(VRRPScript.effect(weight: 20, reverse: true, ok: true) == (-20, false) && VRRPScript.effect(weight: 20, reverse: true, ok: false) == (0, false))
        #expect(VRRPScript.effect(weight: -40, reverse: true, ok: false) == (40, false) && VRRPScript.effect(weight: 0, reverse: true, ok: true) == (0, true))
        let reversed = try KeepalivedConfiguration.parse(
            text.replacingOccurrences(of: "        down weight -40\n", with: "        down weight -40 reverse\n"), file: "k")
        #expect(try HighAvailabilityConfiguration.parse(reversed, file: "k").instances[0].trackScripts[1] == Tracked(name: "down", weight: -40, reverse: true))
        for bad in ["track_script {\n nosuch\n}", "track_script {\n up weight 300\n}", "track_script {\n up weight 20 backwards\n}"] {
            let k = try KeepalivedConfiguration.parse(
                text.replacingOccurrences(of: "track_script {\n        up\n        down weight -40\n        vital\n    }", with: bad), file: "k")
            #expect(throws: ConfigurationError.self) { try HighAvailabilityConfiguration.parse(k, file: "k") }
        }
    }

    /// vrrp_track_process as keepalived matches processes, and track_file's
    /// value times its weight.
    @Test func trackedProcessesAndFiles() throws {
        let text = """
            vrrp_track_process proxy {
                process haproxy
                quorum 2
                quorum_max 3
                delay 1.5
                weight -30 reverse
            }
            vrrp_track_process web {
                process /usr/sbin/nginx -c /etc/nginx/lvs.conf
                param_match partial
                terminate_delay 0.5
            }
            vrrp_track_process unused {
                process sshd
            }
            track_file drain {
                file /run/lvs/drain
                weight -10
                init_file 0 overwrite
            }
            vrrp_instance A {
                interface e
                virtual_router_id 1
                track_process {
                    proxy
                    web weight 20
                }
                track_file {
                    drain
                }
                virtual_ipaddress {
                    198.19.0.10
                }
            }
            """
        let ha = try HighAvailabilityConfiguration.parse(try KeepalivedConfiguration.parse(text, file: "k"), file: "k")
        #expect(ha.processes.map(\.name) == ["proxy", "web"] && ha.instances[0].trackProcesses == [Tracked(name: "proxy"), Tracked(name: "web", weight: 20)])
        let proxy = ha.processes[0]
        let web = ha.processes[1]
        #expect(proxy.quorum == 2 && proxy.quorumMax == 3 && proxy.forkDelay == 1.5 && proxy.terminateDelay == 1.5 && proxy.weight == -30 && proxy.reverse)
        #expect(!proxy.fullCommand && !proxy.hasQuorum(1) && proxy.hasQuorum(2) && proxy.hasQuorum(3) && !proxy.hasQuorum(4))
        // By comm without parameters, exactly (not as pgrep's regular expression).
        #expect(proxy.matches(comm: "haproxy", commandLine: []) && !proxy.matches(comm: "haproxy-ng", commandLine: []))
        // Parameters: argv[0] exactly, then the given ones first (partial), or exactly, or the last one a prefix (initial).
        #expect(web.fullCommand && web.parameterMatch == .partial && web.forkDelay == 0 && web.terminateDelay == 0.5)
        let nginx = ["/usr/sbin/nginx", "-c", "/etc/nginx/lvs.conf"]
        #expect(web.matches(comm: "nginx", commandLine: nginx) && web.matches(comm: "nginx", commandLine: nginx + ["-g", "daemon off;"]))
        #expect(
            !web.matches(comm: "nginx", commandLine: ["nginx", "-c", "/etc/nginx/lvs.conf"]) && !web.matches(comm: "nginx", commandLine: ["/usr/sbin/nginx"]))
        var exact = web
        exact.parameterMatch = .exact
        #expect(exact.matches(comm: "", commandLine: nginx) && !exact.matches(comm: "", commandLine: nginx + ["-g"]))
        var initial = web
        initial.parameterMatch = .initial
        initial.parameters = ["-c", "/etc/nginx/"]
        #expect(initial.matches(comm: "", commandLine: nginx) && !initial.matches(comm: "", commandLine: ["/usr/sbin/nginx", "-c", "/etc/other"]))
        // The file: value × weight (−10), a fault from −254; weight 0: any non-zero value is a fault.
        #expect(ha.files == [TrackedFile(name: "drain", path: "/run/lvs/drain", weight: -10, initial: 0, overwrite: true)])
        #expect(TrackedFile.effect(value: 0, weight: -10, reverse: false) == (0, false))
        #expect(TrackedFile.effect(value: 5, weight: -10, reverse: false) == (-50, false))
        #expect(TrackedFile.effect(value: 30, weight: -10, reverse: false) == (0, true))
        #expect(TrackedFile.effect(value: 30, weight: 10, reverse: false) == (253, false))
        #expect(TrackedFile.effect(value: 5, weight: -10, reverse: true) == (50, false))
        #expect(TrackedFile.effect(value: 1, weight: 0, reverse: false) == (0, true) && TrackedFile.effect(value: 0, weight: 0, reverse: true) == (0, true))
        // This test's own process is found by its comm.
        let me = KernelFile.firstLine("/proc/self/comm") ?? ""
        #expect(VRRPService.running([VRRPTrackedProcess(name: "me", process: me)]).first ?? 0 >= 1)
        for bad in [
            "track_process {\n nosuch\n}", "track_file {\n nosuch\n}",
        ] {
            let k = try KeepalivedConfiguration.parse(text.replacingOccurrences(of: "track_file {\n        drain\n    }", with: bad), file: "k")
            #expect(throws: ConfigurationError.self) { try HighAvailabilityConfiguration.parse(k, file: "k") }
        }
        let crossed = try KeepalivedConfiguration.parse(text.replacingOccurrences(of: "quorum_max 3", with: "quorum_max 1"), file: "k")
        #expect(throws: ConfigurationError.self) { try HighAvailabilityConfiguration.parse(crossed, file: "k") }
    }

    @Test func aSyncGroupIsReadAndItsMembersFollow() throws {
        let instance = { (n: String, id: Int) in "vrrp_instance \(n) {\n interface e\n virtual_router_id \(id)\n virtual_ipaddress {\n 198.19.0.\(id)\n }\n}\n"
        }
        let text = instance("A", 1) + instance("B", 2) + "vrrp_sync_group G {\n group {\n A\n B\n }\n notify_fault \"/bin/true fault\"\n notify /bin/echo\n}\n"
        let ha = try HighAvailabilityConfiguration.parse(try KeepalivedConfiguration.parse(text, file: "k"), file: "k")
        #expect(ha.syncGroups == [VRRPSyncGroup(name: "G", instances: ["A", "B"], notifyFault: "/bin/true fault", notify: "/bin/echo")])
        for bad in [
            "vrrp_sync_group G {\n group {\n A\n C\n }\n}\n", "vrrp_sync_group G {\n group {\n A\n }\n}\n",
            "vrrp_sync_group G {\n group {\n A\n B\n }\n}\nvrrp_sync_group H {\n group {\n B\n A\n }\n}\n",
        ] {
            #expect(throws: ConfigurationError.self) {
                try HighAvailabilityConfiguration.parse(try KeepalivedConfiguration.parse(instance("A", 1) + instance("B", 2) + bad, file: "k"), file: "k")
            }
        }
        // A member's master resigns (priority 0) to follow the group to backup; a backup follows it to master.
        var r = VRRPRouter(ha.instances[0], primaryAddress: ip("198.19.0.9"))
        _ = r.start(now: 0)
        #expect(r.followToMaster(now: 10) == [.advertise(priority: 100), .enter(.master)] && r.state == .master)
        #expect(r.followToBackup(now: 20) == [.advertise(priority: 0), .enter(.backup)] && r.state == .backup && r.master == nil)
        #expect(r.followToBackup(now: 30) == [])
    }

    @Test func unicastPeersGetAdvertisementsAddressedToThem() throws {
        let a = VRRPAdvertisement(version: 3, virtualRouterID: 7, priority: 120, interval: 100, addresses: [ip("198.19.0.10")])
        let packet = a.encode(source: IPv4Address("198.19.0.1")!, destination: IPv4Address("198.19.0.2")!)
        #expect(Array(packet[16..<20]) == [198, 19, 0, 2] && packet[8] == 255)
        // Taken by the peer it was sent to (the checksum's pseudo-header names it), not as a group advertisement.
        #expect(try VRRPAdvertisement.decode(packet, unicastTo: IPv4Address("198.19.0.2")!).0 == a)
        #expect(throws: VRRPAdvertisement.DecodeError.notVRRP) { try VRRPAdvertisement.decode(packet) }
        let six = VRRPAdvertisement(version: 3, virtualRouterID: 7, priority: 120, interval: 100, addresses: [ip("2001:db8:1::10")])
        let m = six.message(source: ip("2001:db8:1::1"), destination: ip("2001:db8:1::2"))
        #expect(try VRRPAdvertisement.decode6(m, source: IPv6Address("2001:db8:1::1")!, hopLimit: 255, unicastTo: IPv6Address("2001:db8:1::2")!) == six)
        #expect(throws: VRRPAdvertisement.DecodeError.checksum) { try VRRPAdvertisement.decode6(m, source: IPv6Address("2001:db8:1::1")!, hopLimit: 255) }
        let k = try KeepalivedConfiguration.parse(
            "vrrp_instance A {\n interface e\n virtual_router_id 1\n unicast_src_ip 198.19.0.1\n unicast_peer {\n  198.19.0.2\n  198.19.0.3\n }\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n",
            file: "k")
        let i = try HighAvailabilityConfiguration.parse(k, file: "k").instances[0]
        #expect(i.unicastSource == ip("198.19.0.1") && i.unicastPeers == [ip("198.19.0.2"), ip("198.19.0.3")])
        let mixed = try KeepalivedConfiguration.parse(
            "vrrp_instance A {\n interface e\n virtual_router_id 1\n unicast_peer {\n  2001:db8::2\n }\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n", file: "k")
        #expect(throws: ConfigurationError.self) { try HighAvailabilityConfiguration.parse(mixed, file: "k") }
    }

    @Test func keepalivedConfVRRPAndSyncDaemon() throws {
        let text = """
            global_defs {
              vrrp_version 3
              lvs_sync_daemon eth1 VI_1 maxlen 1400 port 8849
            }
            vrrp_instance VI_1 {
              state MASTER
              interface eth1
              virtual_router_id 51
              priority 150
              advert_int 0.5
              nopreempt
              preempt_delay 10
              track_interface {
                eth2
                eth3 weight -30
              }
              virtual_ipaddress {
                198.19.0.10/24 dev eth1
                198.19.0.3
              }
              virtual_ipaddress_excluded { 2001:db8:1::10 }
              notify_master "/bin/echo master"
            }
            """
        let k = try KeepalivedConfiguration.parse(text, file: "k.conf")
        let ha = try HighAvailabilityConfiguration.parse(k, file: "k.conf")
        let i = try #require(ha.instances.first)
        #expect(i.name == "VI_1" && i.state == .master && i.interface == "eth1" && i.virtualRouterID == 51 && i.priority == 150)
        #expect(
            i.advertisementInterval == 50 && !i.preempt && i.preemptDelay == 10_000
                && i.trackInterfaces == [Tracked(name: "eth2"), Tracked(name: "eth3", weight: -30)] && i.version == 3)
        #expect(i.addresses == [ip("198.19.0.10"), ip("198.19.0.3")] && i.excludedAddresses == [ip("2001:db8:1::10")])
        #expect(i.notifyMaster == "/bin/echo master")
        // The sync id defaults to the instance's virtual router id, as keepalived does.
        #expect(ha.syncDaemon(master: true) == SyncDaemonConfiguration(role: .master, interface: "eth1", syncID: 51, port: 8849, maxLength: 1400))
        #expect(ha.syncDaemon(master: false)?.role == .backup)
        // keepalived 1.x's lvs_sync_daemon_interface in the instance: the same tie, with the sync daemon's defaults.
        let old = try KeepalivedConfiguration.parse(
            "vrrp_instance VI_2 {\n interface eth1\n virtual_router_id 52\n lvs_sync_daemon_interface eth1\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n",
            file: "o.conf")
        #expect(
            try HighAvailabilityConfiguration.parse(old, file: "o.conf").syncDaemon(master: true)
                == SyncDaemonConfiguration(role: .master, interface: "eth1", syncID: 52))
        #expect(
            KeepalivedAudit.audit(
                try KeepalivedConfiguration.tokenizeAndNest(
                    "vrrp_instance VI_2 {\n interface eth1\n virtual_router_id 52\n lvs_sync_daemon_interface eth1\n virtual_ipaddress {\n 198.19.0.10\n }\n}\n",
                    file: "o.conf"), file: "o.conf"
            ).isEmpty)
        for (bad, message) in [
            ("interface e\nvirtual_router_id 1", "no virtual_ipaddress"),
            ("interface e\nvirtual_ipaddress {\n1.2.3.4\n}", "no virtual_router_id"),
            ("interface e\nvirtual_router_id 1\nadvert_int 0.5\nvirtual_ipaddress {\n1.2.3.4\n}", "whole seconds"),
            ("interface e\nvirtual_router_id 1\nvirtual_ipaddress {\n1.2.3.4\n}\n}\nglobal_defs {\nlvs_sync_daemon e Y", "no vrrp_instance named Y"),
            (
                "interface e\nvirtual_router_id 1\nlvs_sync_daemon_interface e\nvirtual_ipaddress {\n1.2.3.4\n}\n}\nglobal_defs {\nlvs_sync_daemon e X",
                "one sync daemon only"
            ),
        ] {
            let parsed = try KeepalivedConfiguration.parse("vrrp_instance X {\n" + bad + "\n}\n", file: "b.conf")
            #expect { try HighAvailabilityConfiguration.parse(parsed, file: "b.conf") } throws: { "\($0)".contains(message) }
        }
    }
}
