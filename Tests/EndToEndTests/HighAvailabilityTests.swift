import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// Director high availability with real kernels, real keepalived and real
/// traffic: VRRP between lvsd and keepalived, and two lvsd directors with
/// connection sync losing a master to SIGKILL under iperf3 streams and idle
/// keep-alive connections.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct HighAvailabilityTests {
    static let bin = Executables.directory
    static let keepalivedHost = "198.19.0.4"
    static let secondDirector = "198.19.0.2"

    /// The lvsd's VRRP instance as `-L --json` reports it: state and master.
    func vrrp(_ lab: Lab, role: String = "d") -> (state: String, master: String?)? {
        guard let text = try? lab.lvsadm("-L -n --json", role: role),
            let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let first = (json["vrrp"] as? [[String: Any]])?.first, let state = first["state"] as? String
        else { return nil }
        return (state, first["master"] as? String)
    }

    /// Polls until `condition`; the milliseconds it took, or nil after `limit` seconds.
    func vrrpInstance(interface: String, priority: Int, addresses: [String], router: Int = 51, lines: String = "", name: String = "VI_1") -> String {
        """
        vrrp_instance \(name) {
            state BACKUP
            interface \(interface)\(lines)
            virtual_router_id \(router)
            priority \(priority)
            advert_int 1
            virtual_ipaddress {
        \(addresses.map { "        \($0)" }.joined(separator: "\n"))
            }
        }
        """
    }

    func write(_ lab: Lab, _ name: String, _ text: String) throws -> String {
        let url = lab.directory.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    /// The router's neighbour entry for `address`, after a datagram made it ask.
    func routerSees(_ lab: Lab, _ address: String) throws -> String {
        let family = address.contains(":") ? "10" : "2"
        _ = try lab.inside("rt", "/usr/bin/python3", "-c", "import socket; socket.socket(\(family), 2).sendto(b'?', ('\(address)', 9))", check: false)
        usleep(200_000)
        return try lab.inside("rt", "ip", "neigh", "show", address)
    }

    func mac(_ lab: Lab, _ role: String) throws -> String {
        try lab.inside(role, "cat", "/sys/class/net/\(lab.ns(role + "0"))/address").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One interoperability run: the VRRP version, and the family of the virtual address.
    struct Interop: Sendable, CustomTestStringConvertible {
        var version: Int
        var ipv6: Bool
        /// unicast_src_ip and unicast_peer, with multicast dropped in both namespaces.
        var unicast = false
        /// Version 2's `auth_type AH` instead of PASS.
        var authenticationHeader = false
        var testDescription: String {
            "VRRPv\(version) over IPv\(ipv6 ? 6 : 4)\(unicast ? " to unicast peers" : "")\(authenticationHeader ? " with IPsec AH" : "")"
        }
    }

    /// An address's link-local IPv6 address, the source of its VRRP over IPv6.
    func linkLocal(_ lab: Lab, _ role: String) -> String? {
        let out = (try? lab.inside(role, "ip", "-6", "-o", "addr", "show", "dev", lab.ns(role + "0"), "scope", "link")) ?? ""
        return out.split(separator: " ").first { $0.hasPrefix("fe80::") }.map { String($0.split(separator: "/")[0]) }
    }

    /// VRRP version 3 (RFC 5798) over IPv4 and IPv6, and version 2, keepalived's default.
    @Test(arguments: [
        Interop(version: 3, ipv6: false), Interop(version: 2, ipv6: false), Interop(version: 3, ipv6: true),
        Interop(version: 3, ipv6: false, unicast: true), Interop(version: 2, ipv6: false, authenticationHeader: true),
    ])
    func lvsdAndKeepalivedShareOneVirtualRouter(_ run: Interop) throws {
        let lab = try Lab(
            prefix: "ltvr\(run.version)\(run.ipv6 ? "6" : "")\(run.unicast ? "u" : "")\(run.authenticationHeader ? "a" : "")", bin: Self.bin, servers: 1)
        defer { lab.teardown() }
        try lab.addHost("k", address: Self.keepalivedHost, address6: "2001:db8:1::4")
        let vip = run.ipv6 ? "2001:db8:1::50" : "198.19.0.50"
        let family = run.ipv6 ? "-6" : "-4"
        let global = "global_defs {\n    vrrp_version \(run.version)\n    script_user root\n}\n"
        // Version 2 with RFC 3768's simple password or an IPsec AH, as keepalived speaks them.
        let auth =
            run.version == 2 ? "\n    authentication {\n        auth_type \(run.authenticationHeader ? "AH" : "PASS")\n        auth_pass lvs-pass\n    }" : ""
        func unicast(from: String, to: String) -> String {
            run.unicast ? "\n    unicast_src_ip \(from)\n    unicast_peer {\n        \(to)\n    }" : ""
        }
        if run.unicast {
            // No multicast in or out of either router: only the unicast advertisements can keep them apart.
            for role in ["d", "k"] {
                try lab.inside(
                    role, "nft",
                    "add table ip nomcast { chain out { type filter hook output priority 0; ip daddr 224.0.0.18 drop; }; chain in { type filter hook input priority 0; ip daddr 224.0.0.18 drop; }; }"
                )
            }
        }
        let kconf = try write(
            lab, "keepalived.conf",
            global
                + vrrpInstance(
                    interface: lab.ns("k0"), priority: 100, addresses: ["\(vip)/\(run.ipv6 ? 64 : 24)"],
                    lines: auth + unicast(from: Self.keepalivedHost, to: Lab.director)))
        let keepalived = try runKeepalived(lab, kconf)
        let lconf = try write(
            lab, "lvsd.conf",
            global + vrrpInstance(interface: lab.ns("d0"), priority: 150, addresses: [vip], lines: auth + unicast(from: Lab.director, to: Self.keepalivedHost)))
        var lvsd = try lab.startDirector(extra: ["--keepalived", lconf])
        func keepalivedHoldsVIP() -> Bool { ((try? lab.inside("k", "ip", family, "addr", "show", "dev", lab.ns("k0"))) ?? "").contains(vip + "/") }
        func routerFinds(_ role: String) -> Bool { ((try? routerSees(lab, vip)) ?? "").contains((try? mac(lab, role)) ?? "?") }
        let keepalivedAddress = run.ipv6 ? linkLocal(lab, "k") : Self.keepalivedHost
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))\n--- keepalived ---\n\(lab.logText("keepalived"))" }

        // Higher priority: lvsd is master, keepalived backup; the router reaches the VIP at lvsd.
        let elected = waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" }
        #expect(elected != nil, "\(context())")
        #expect(waitFor(limit: 5) { lab.logText("keepalived").contains("Entering BACKUP STATE") } != nil)
        #expect(!keepalivedHoldsVIP())
        #expect(waitFor(limit: 3) { routerFinds("d") } != nil)

        // lvsd dies: keepalived takes over within 3 × advert_int + skew (3.61 s at priority 100).
        kill(lvsd.processIdentifier, SIGKILL)
        lvsd.waitUntilExit()
        let takeover = waitFor(limit: 8) { keepalivedHoldsVIP() }
        #expect(takeover != nil && takeover! <= 4500, "keepalived took over after \(String(describing: takeover)) ms\n\(context())")
        print("\(run.testDescription): keepalived took over from a killed lvsd in \(takeover ?? -1) ms")
        #expect(waitFor(limit: 3) { routerFinds("k") } != nil)

        // lvsd back at a lower priority: backup, and it names keepalived as the master.
        _ = try write(
            lab, "lvsd.conf",
            global + vrrpInstance(interface: lab.ns("d0"), priority: 50, addresses: [vip], lines: auth + unicast(from: Lab.director, to: Self.keepalivedHost)))
        lvsd = try lab.startDirector(extra: ["--keepalived", lconf])
        #expect(
            waitFor(limit: 5) { vrrp(lab)?.master != nil && vrrp(lab)?.master == keepalivedAddress } != nil, "\(String(describing: vrrp(lab)))\n\(context())")
        usleep(4_500_000)  // longer than its master-down interval: it must still be backup
        #expect(vrrp(lab)?.state == "BACKUP" && keepalivedHoldsVIP())

        // keepalived stops (and resigns with priority 0): lvsd takes over, keepalived lets the VIP go.
        kill(keepalived.processIdentifier, SIGTERM)
        let resign = waitFor(limit: 5) { vrrp(lab)?.state == "MASTER" }
        #expect(resign != nil && resign! <= 2000, "lvsd took over after \(String(describing: resign)) ms\n\(context())")
        print("\(run.testDescription): lvsd took over from a stopping keepalived in \(resign ?? -1) ms")
        #expect(waitFor(limit: 5) { !keepalivedHoldsVIP() } != nil)
        #expect(waitFor(limit: 3) { routerFinds("d") } != nil)
        // Neither side refused the other's authentication header.
        #expect(!lab.logText("keepalived").contains("invalid IPSEC") && !lab.logText("lvsd").contains("IPSEC-AH"), "\(context())")
        guard !run.ipv6 && run.version == 3 && !run.unicast else { return }

        // The sync daemons by hand, as with ipvsadm.
        let d0 = lab.ns("d0")
        try lab.lvsadm("--start-daemon backup --mcast-interface \(d0) --syncid 7 --mcast-port 8850")
        try lab.lvsadm("--start-daemon master --mcast-interface \(d0) --sync-maxlen 1000 --mcast-group 239.1.2.3 --mcast-ttl 2")
        #expect(
            try lab.lvsadm("-L --daemon") == """
                master sync daemon (mcast=\(d0), syncid=0, maxlen=1000, group=239.1.2.3, port=8848, ttl=2)
                backup sync daemon (mcast=\(d0), syncid=7, maxlen=1472, group=224.0.0.81, port=8850, ttl=1)

                """)
        #expect(throws: (any Error).self) { try lab.lvsadm("--start-daemon master --mcast-interface \(d0)") }
        #expect(throws: (any Error).self) { try lab.lvsadm("--start-daemon backup --mcast-interface nosuchif0") }
        try lab.lvsadm("--stop-daemon master")
        try lab.lvsadm("--stop-daemon backup")
        #expect(try lab.lvsadm("-L --daemon").isEmpty)
        #expect(throws: (any Error).self) { try lab.lvsadm("--stop-daemon backup") }
        _ = lvsd
    }

    /// Debian's keepalived in host k, in the foreground, VRRP only, with `conf`.
    func runKeepalived(_ lab: Lab, _ conf: String) throws -> RunningProcess {
        try lab.start(
            "k",
            [
                "keepalived", "-n", "-l", "-D", "-P", "-f", conf, "-p", lab.directory.appendingPathComponent("k.pid").path,
                "-r", lab.directory.appendingPathComponent("k-vrrp.pid").path,
            ], logName: "keepalived")
    }

    /// A master lvsd handed over to a new lvsd (`--takeover`): the new one
    /// starts as master, no priority-0 advertisement goes out, and the
    /// keepalived backup never takes the VIP.
    @Test func aHandoverKeepsMastership() throws {
        let lab = try Lab(prefix: "ltvho", bin: Self.bin, servers: 1)
        defer { lab.teardown() }
        try lab.addHost("k", address: Self.keepalivedHost, address6: "2001:db8:1::4")
        let vip = "198.19.0.50"
        let global = "global_defs {\n    vrrp_version 3\n}\n"
        let keepalived = try runKeepalived(
            lab, try write(lab, "keepalived.conf", global + vrrpInstance(interface: lab.ns("k0"), priority: 100, addresses: ["\(vip)/24"])))
        let lconf = try write(lab, "lvsd.conf", global + vrrpInstance(interface: lab.ns("d0"), priority: 150, addresses: [vip]))
        let old = try lab.startDirector(extra: ["--keepalived", lconf])
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))\n--- new ---\n\(lab.logText("lvsd-new"))\n--- keepalived ---\n\(lab.logText("keepalived"))" }
        #expect(waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" } != nil, "\(context())")
        #expect(waitFor(limit: 5) { lab.logText("keepalived").contains("Entering BACKUP STATE") } != nil, "\(context())")
        let new = try lab.takeOver(extra: ["--keepalived", lconf], logName: "lvsd-new")
        old.waitUntilExit()
        #expect(waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" } != nil, "\(context())")
        // Longer than keepalived's master-down interval (3 × 1 s + skew): a silent or resigning master would have lost the VIP by now.
        usleep(4_500_000)
        #expect(new.isRunning && vrrp(lab)?.state == "MASTER", "\(context())")
        #expect(!lab.logText("keepalived").contains("Entering MASTER STATE") && !lab.logText("keepalived").contains("priority 0"), "\(context())")
        print(
            "handover: VRRP master kept; keepalived: \(lab.logText("keepalived").split(separator: "\n").filter { $0.contains("STATE") }.joined(separator: "; "))"
        )
        keepalived.signal(SIGTERM)
        _ = keepalived.waitUntilExit(timeout: 5)
    }

    /// keepalived's usual way for a director to give up mastership when
    /// something local fails: a vrrp_script tracked with a negative weight.
    /// lvsd (priority 150) masters over keepalived (100) until its script
    /// fails (a file appears: 150 − 100 = 50), keepalived takes the VIP,
    /// and when the script passes again lvsd preempts it back. The same
    /// with each of the other things an instance tracks, weight −100: an
    /// interface that goes down, a process that stops (vrrp_track_process),
    /// a file that holds 1 (track_file, created by init_file).
    @Test func whatAMasterTracksHandsTheVIPToKeepalivedAndBack() throws {
        let lab = try Lab(prefix: "ltvrs", bin: Self.bin, servers: 1)
        defer { lab.teardown() }
        try lab.addHost("k", address: Self.keepalivedHost, address6: "2001:db8:1::4")
        let vip = "198.19.0.50"
        let global = "global_defs {\n    vrrp_version 3\n    script_user root\n}\n"
        let kconf = try write(lab, "keepalived.conf", global + vrrpInstance(interface: lab.ns("k0"), priority: 100, addresses: ["\(vip)/24"]))
        let keepalived = try runKeepalived(lab, kconf)
        let broken = lab.directory.appendingPathComponent("broken").path
        let drain = lab.directory.appendingPathComponent("drain").path
        // A process of a name no other has: a copy of sleep.
        let tracked = lab.directory.appendingPathComponent("lvs-tracked").path
        try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: tracked)
        var process = try lab.start("d", [tracked, "600"], logName: "tracked")
        let blocks = """
            vrrp_script local_check {
                script "/usr/bin/test ! -e \(broken)"
                interval 0.5
                fall 2
                rise 2
            }
            vrrp_track_process proxy {
                process lvs-tracked
            }
            track_file drain {
                file \(drain)
                init_file
            }

            """
        let tracking = """

                track_script {
                    local_check weight -100
                }
                track_interface {
                    \(lab.ns("dt")) weight -100
                }
                track_process {
                    proxy weight -100
                }
                track_file {
                    drain weight -100
                }
            """
        let lconf = try write(lab, "lvsd.conf", global + blocks + vrrpInstance(interface: lab.ns("d0"), priority: 150, addresses: [vip], lines: tracking))
        try lab.inside("d", "ip", "link", "add", lab.ns("dt"), "type", "veth", "peer", "name", lab.ns("du"))
        try lab.inside("d", "ip", "link", "set", lab.ns("dt"), "up")
        try lab.inside("d", "ip", "link", "set", lab.ns("du"), "up")
        try lab.startDirector(extra: ["--keepalived", lconf])
        func keepalivedHoldsVIP() -> Bool { ((try? lab.inside("k", "ip", "-4", "addr", "show", "dev", lab.ns("k0"))) ?? "").contains(vip + "/") }
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))\n--- keepalived ---\n\(lab.logText("keepalived"))" }
        #expect(waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" } != nil, "\(context())")
        #expect(waitFor(limit: 5) { lab.logText("keepalived").contains("Entering BACKUP STATE") } != nil, "\(context())")
        #expect((try? String(contentsOfFile: drain, encoding: .utf8)) == "0\n", "init_file writes 0")

        let cases: [(what: String, logged: String, fail: () throws -> Void, heal: () throws -> Void)] = [
            (
                "track_script", "VRRP_Script(local_check) failed", { _ = FileManager.default.createFile(atPath: broken, contents: nil) },
                { try FileManager.default.removeItem(atPath: broken) }
            ),
            (
                "track_interface", "tracking: interface \(lab.ns("dt")) down", { try lab.inside("d", "ip", "link", "set", lab.ns("dt"), "down") },
                { try lab.inside("d", "ip", "link", "set", lab.ns("dt"), "up") }
            ),
            (
                "track_process", "VRRP_Track_Process(proxy) quorum lost",
                {
                    kill(process.processIdentifier, SIGKILL)
                    process.waitUntilExit()
                }, { process = try lab.start("d", [tracked, "600"], logName: "tracked") }
            ),
            (
                "track_file", "tracking: file drain holds 1", { try "1\n".write(toFile: drain, atomically: true, encoding: .utf8) },
                { try "0\n".write(toFile: drain, atomically: true, encoding: .utf8) }
            ),
        ]
        for c in cases {
            try c.fail()
            let handedOver = waitFor(limit: 10) { keepalivedHoldsVIP() && vrrp(lab)?.state == "BACKUP" }
            #expect(handedOver != nil && lab.logText("lvsd").contains(c.logged) && lab.logText("lvsd").contains("priority 50"), "\(c.what)\n\(context())")
            print("\(c.what): keepalived holds the VIP \(handedOver ?? -1) ms after the failure")
            try c.heal()
            let back = waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" && !keepalivedHoldsVIP() }
            #expect(back != nil, "\(c.what)\n\(context())")
            print("\(c.what): lvsd master again \(back ?? -1) ms after it healed")
        }
        _ = keepalived
    }

    /// A vrrp_sync_group moves its instances together: lvsd masters two
    /// virtual routers over keepalived; the first one's tracked script
    /// (weight 0) fails, it goes to FAULT and takes the second with it, so
    /// keepalived holds both VIPs; when the script passes again both come
    /// back to lvsd. The group's notify script sees each change.
    @Test func aSyncGroupMovesItsInstancesTogether() throws {
        let lab = try Lab(prefix: "ltvrg", bin: Self.bin, servers: 1)
        defer { lab.teardown() }
        try lab.addHost("k", address: Self.keepalivedHost, address6: "2001:db8:1::4")
        let vips = ["198.19.0.50", "198.19.0.51"]
        let global = "global_defs {\n    vrrp_version 3\n    script_user root\n}\n"
        func instances(_ role: String, _ priority: Int, _ lines: String = "") -> String {
            vrrpInstance(interface: lab.ns(role + "0"), priority: priority, addresses: [vips[0] + "/24"], router: 51, lines: lines, name: "VI_1")
                + "\n"
                + vrrpInstance(interface: lab.ns(role + "0"), priority: priority, addresses: [vips[1] + "/24"], router: 52, name: "VI_2")
        }
        let kconf = try write(lab, "keepalived.conf", global + instances("k", 100))
        let keepalived = try runKeepalived(lab, kconf)
        let broken = lab.directory.appendingPathComponent("broken").path
        let notified = lab.directory.appendingPathComponent("group.log").path
        let lconf = try write(
            lab, "lvsd.conf",
            global
                + "vrrp_script local_check {\n    script \"/usr/bin/test ! -e \(broken)\"\n    interval 0.5\n}\n"
                + "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n    notify \"/bin/sh -c 'echo $0 $1 $2 >> \(notified)'\"\n}\n"
                + instances("d", 150, "\n    track_script {\n        local_check\n    }"))
        try lab.startDirector(extra: ["--keepalived", lconf])
        func states() -> [String] {
            guard let text = try? lab.lvsadm("-L -n --json"), let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                let all = json["vrrp"] as? [[String: Any]]
            else { return [] }
            return all.compactMap { $0["state"] as? String }
        }
        func keepalivedHolds() -> [Bool] {
            let out = (try? lab.inside("k", "ip", "-4", "addr", "show", "dev", lab.ns("k0"))) ?? ""
            return vips.map { out.contains($0 + "/") }
        }
        let context = { "\(states())\n--- lvsd ---\n\(lab.logText("lvsd"))\n--- keepalived ---\n\(lab.logText("keepalived"))" }
        #expect(waitFor(limit: 10) { states() == ["MASTER", "MASTER"] } != nil, "\(context())")

        _ = FileManager.default.createFile(atPath: broken, contents: nil)
        let moved = waitFor(limit: 10) { states() == ["FAULT", "FAULT"] && keepalivedHolds() == [true, true] }
        #expect(moved != nil, "\(context())")
        print("vrrp_sync_group: keepalived holds both VIPs \(moved ?? -1) ms after one instance's script failed")

        try FileManager.default.removeItem(atPath: broken)
        let back = waitFor(limit: 10) { states() == ["MASTER", "MASTER"] && keepalivedHolds() == [false, false] }
        #expect(back != nil, "\(context())")
        let log = (try? String(contentsOfFile: notified, encoding: .utf8)) ?? ""
        #expect(log.contains("GROUP G FAULT") && log.contains("GROUP G MASTER"), "\(log)")
        _ = keepalived
    }

    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ha")

    /// Both directors' keepalived.conf: one service per method for iperf3
    /// (5201) and for HTTP (80), each on its own real server, and one VRRP
    /// instance holding the VIPs, the NAT servers' gateway and the LIP.
    func haConfiguration(interface: String, priority: Int) -> String {
        func service(_ vip: String, _ port: Int, _ method: String, _ rs: Int) -> String {
            """
            virtual_server \(vip) \(port) {
                lvs_sched rr
                lvs_method \(method)
                protocol TCP
            \(method == "FNAT" ? "    laddr_group_name laddr\n" : "")    real_server \(Lab.real(rs)) \(port) {
                    weight 1
                }
            }

            """
        }
        return """
            global_defs {
                vrrp_version 3
                lvs_sync_daemon \(interface) VI_1
            }
            local_address_group laddr {
                \(Lab.lip)
            }

            """
                + [(Self.natVIP, "NAT", 1), (Self.drVIP, "DR", 2), (Self.fullNATVIP, "FNAT", 3)].map { v, m, rs in
                    service(v, 5201, m, rs) + service(v, 80, m, rs)
                }.joined()
                + vrrpInstance(
                    interface: interface, priority: priority,
                    addresses: [Self.natVIP, Self.drVIP, Self.fullNATVIP, Self.gateway, Lab.lip])
    }

    static let natVIP = "198.19.0.10"
    static let drVIP = "198.19.0.20"
    static let fullNATVIP = "198.19.0.30"
    /// The NAT real server's default gateway, which moves with the master.
    static let gateway = "198.19.0.3"

    /// A master lvsd (the lab's director) and a backup (host e, added here)
    /// sharing one VRRP instance that holds the FULLNAT VIP and the LIP,
    /// syncing connections (the sync daemon tied to the instance in
    /// keepalived 1.x's form, `lvs_sync_daemon_interface`), serving
    /// `service`; the master's process once both know their roles.
    func startFullNATPair(_ lab: Lab, service: String) throws -> RunningProcess {
        try lab.addHost("e", address: Self.secondDirector, address6: "2001:db8:1::2")
        func configuration(_ interface: String, _ priority: Int) -> String {
            """
            global_defs {
                vrrp_version 3
            }
            local_address_group laddr {
                \(Lab.lip)
            }
            \(service)

            """
                + vrrpInstance(
                    interface: interface, priority: priority, addresses: [Self.fullNATVIP, Lab.lip], lines: "\n    lvs_sync_daemon_interface \(interface)")
        }
        let master = try lab.startDirector(extra: ["--keepalived", try write(lab, "d.conf", configuration(lab.ns("d0"), 150))])
        let context = { "--- master ---\n\(lab.logText("lvsd"))\n--- backup ---\n\(lab.logText("lvsd-e"))" }
        #expect(waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" } != nil, "\(context())")
        try lab.startDirector(extra: ["--keepalived", try write(lab, "e.conf", configuration(lab.ns("e0"), 100))], role: "e")
        #expect(waitFor(limit: 5) { vrrp(lab, role: "e")?.master == Lab.director } != nil, "\(context())")
        return master
    }

    /// A backup that takes over in the middle of an upload keeps the PROXY
    /// header's sequence shift, which came to it in the sync messages: the
    /// upload (10 MB through FULLNAT with PROXY protocol v2, slowed so that
    /// the master dies halfway) reaches nginx byte for byte, behind one header.
    @Test func aBackupTakingOverMidStreamKeepsTheProxyHeadersShift() throws {
        let lab = try Lab(prefix: "lthp", bin: Self.bin)
        defer { lab.teardown() }
        do {
            try lab.startNginx()
            let master = try startFullNATPair(
                lab,
                service: """
                    virtual_server \(Self.fullNATVIP) 81 {
                        lvs_sched rr
                        lvs_method FNAT
                        protocol TCP
                        laddr_group_name laddr
                        proxy_protocol v2
                        real_server \(Lab.real(1)) 8081 {
                            weight 1
                        }
                    }
                    """)
            let context = { "--- master ---\n\(lab.logText("lvsd"))\n--- backup ---\n\(lab.logText("lvsd-e"))" }

            let (file, digest) = try lab.randomFile("upload.bin", megabytes: 10)
            let upload = try lab.start(
                "c", ["curl", "-sS", "--max-time", "60", "--limit-rate", "1M", "--data-binary", "@" + file, "http://\(Self.fullNATVIP):81/upload"],
                logName: "upload")
            #expect(waitFor(limit: 5) { ((try? lab.lvsadm("-L -n -c", role: "e")) ?? "").contains("\(Self.fullNATVIP):81") } != nil, "\(context())")
            usleep(3_000_000)
            kill(master.processIdentifier, SIGKILL)
            master.waitUntilExit()
            #expect(waitFor(limit: 8) { vrrp(lab, role: "e")?.state == "MASTER" } != nil, "\(context())")
            upload.waitUntilExit()
            #expect(upload.terminationStatus == 0 && lab.logText("upload").contains("stored"), "\(lab.logText("upload"))\n\(context())")
            let dir = lab.directory.appendingPathComponent("nginx1/uploads")
            let stored = try FileManager.default.contentsOfDirectory(atPath: dir.path).map {
                String(try Lab.exec(["sha256sum", dir.appendingPathComponent($0).path]).prefix(64))
            }
            #expect(stored == [digest], "\(stored) against \(digest)")
            let logged = (try? String(contentsOf: lab.directory.appendingPathComponent("nginx1/proxied.log"), encoding: .utf8)) ?? ""
            #expect(logged == "\(Lab.client) " + logged.dropFirst(Lab.client.count + 1) && logged.split(separator: "\n").count == 1, "\(logged)")
        } catch {
            Issue.record("\(error)")
        }
    }

    /// An SCTP association through FULLNAT (usrsctp's client and echo
    /// server) outlives its director: the backup, given the association by
    /// the sync daemon in the kernel's SCTP state numbers, takes the VIP and
    /// the LIP over when the master is killed, and the association goes on
    /// (a message after the takeover echoed back) and closes gracefully.
    @Test func aBackupTakesOverAnSCTPAssociation() throws {
        let lab = try Lab(prefix: "lths", bin: Self.bin)
        defer { lab.teardown() }
        do {
            try lab.start("r1", ["/usr/lib/usrsctp/echo_server", "0"], logName: "echo")
            let master = try startFullNATPair(
                lab,
                service: """
                    virtual_server \(Self.fullNATVIP) 7 {
                        lvs_sched rr
                        lvs_method FNAT
                        protocol SCTP
                        laddr_group_name laddr
                        real_server \(Lab.real(1)) 7 {
                            weight 1
                        }
                    }
                    """)
            let context = { "--- master ---\n\(lab.logText("lvsd"))\n--- backup ---\n\(lab.logText("lvsd-e"))\n--- client ---\n\(lab.logText("sctp"))" }

            let client = try lab.start(
                "c", ["sh", "-c", "(echo before; sleep 9; echo after; sleep 3) | timeout 30 /usr/lib/usrsctp/client \(Self.fullNATVIP) 7 20001 0"],
                logName: "sctp")
            let synced = waitFor(limit: 5) {
                ((try? lab.lvsadm("-L -n -c", role: "e")) ?? "").contains(
                    try! Regex("SCTP .* ESTABLISHED +\\Q\(Lab.client)\\E:20001 +\\Q\(Self.fullNATVIP)\\E:7"))
            }
            #expect(synced != nil, "the backup never listed the association: \(context())")
            kill(master.processIdentifier, SIGKILL)
            master.waitUntilExit()
            #expect(waitFor(limit: 8) { vrrp(lab, role: "e")?.state == "MASTER" } != nil, "\(context())")
            client.waitUntilExit()
            let said = lab.logText("sctp")
            #expect(said.contains("before") && said.contains("after") && said.contains("SCTP_SHUTDOWN_COMP"), "\(context())")
            let stats = try lab.lvsadm("-L -n --stats --exact", role: "e")
            #expect(stats.contains(try Regex("SCTP +\\Q\(Self.fullNATVIP)\\E:7 +0 +[1-9]")), "the backup forwarded none of it: \(stats)")
        } catch {
            Issue.record("\(error)")
        }
    }

    /// With one worker on each director, and with two (each synced connection is owned by the backup's worker its frames are steered to).
    @Test(arguments: [1, 2])
    func aKilledMasterLosesNoConnectionAndTheSyncTrafficDecodes(workers: Int) throws {
        let lab = try Lab(prefix: "ltha\(workers)", bin: Self.bin)
        defer { lab.teardown() }
        try lab.addHost("e", address: Self.secondDirector, address6: "2001:db8:1::2")
        try lab.startNginx(keepalive: 120)
        try lab.inside("r2", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Self.drVIP)
        try lab.inside("r1", "ip", "route", "replace", "default", "via", Self.gateway)
        for i in [2, 3] { try lab.inside("r\(i)", "ip", "route", "replace", "default", "via", Lab.router) }
        for i in 1...3 { try lab.start("r\(i)", ["iperf3", "-s", "-p", "5201"], logName: "iperf3-server\(i)") }
        try lab.start(
            "e",
            [
                "tcpdump", "-i", lab.ns("e0"), "-U", "-n", "-w", lab.directory.appendingPathComponent("sync.pcap").path,
                "udp", "port", "8848",
            ], logName: "tcpdump")
        let master = try lab.startDirector(
            extra: ["--workers", String(workers), "--keepalived", try write(lab, "d.conf", haConfiguration(interface: lab.ns("d0"), priority: 150))])
        let context = { "--- master ---\n\(lab.logText("lvsd"))\n--- backup ---\n\(lab.logText("lvsd-e"))" }
        #expect(waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" } != nil, "\(context())")
        try lab.startDirector(
            extra: [
                "--workers", String(workers), "--keepalived", try write(lab, "e.conf", haConfiguration(interface: lab.ns("e0"), priority: 100)),
                "--metrics", "127.0.0.1:19190",
            ], role: "e")
        #expect(waitFor(limit: 5) { vrrp(lab, role: "e")?.master == Lab.director } != nil, "\(context())")
        #expect(try lab.lvsadm("-L --daemon") == "master sync daemon (mcast=\(lab.ns("d0")), syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n")
        #expect(try lab.lvsadm("-L --daemon", role: "e").hasPrefix("backup sync daemon (mcast=\(lab.ns("e0")), syncid=51,"))

        // Idle keep-alive connections and a 20-second iperf3 stream through each method.
        let go = lab.directory.appendingPathComponent("go").path
        try lab.start(
            "c",
            [
                "/usr/bin/python3", Self.scripts.appendingPathComponent("many_clients.py").path, go, "5", Lab.client,
                "\(Self.natVIP):80", "\(Self.drVIP):80", "\(Self.fullNATVIP):80",
            ], logName: "idle")
        #expect(waitFor(limit: 10) { lab.logText("idle").contains("ready") } != nil, "\(lab.logText("idle"))")
        var streams: [(String, RunningProcess)] = []
        for (name, vip) in [("NAT", Self.natVIP), ("DR", Self.drVIP), ("FULLNAT", Self.fullNATVIP)] {
            streams.append(
                (
                    name,
                    try lab.start(
                        "c", ["iperf3", "-c", vip, "-p", "5201", "-t", "20", "-b", "20M", "-i", "0.1", "--json"],
                        logName: "iperf3-\(name)")
                ))
        }
        usleep(5_000_000)
        let synced = try lab.lvsadm("-L -n -c", role: "e")
        for vip in [Self.natVIP, Self.drVIP, Self.fullNATVIP] {
            // The iperf3 control and data connections and the 5 idle ones, on the backup before the master dies.
            #expect(
                synced.components(separatedBy: "\(vip):5201").count - 1 >= 2 && synced.components(separatedBy: "\(vip):80").count - 1 == 5,
                "\(synced)")
        }

        try lab.start("rt", ["tcpdump", "-i", "br0", "-n", "-l", "arp"], logName: "arp")
        usleep(300_000)
        kill(master.processIdentifier, SIGKILL)
        master.waitUntilExit()
        let takeover = waitFor(limit: 8) { vrrp(lab, role: "e")?.state == "MASTER" }
        // 3 × advert_int + skew at priority 100 (3.61 s after the master's last advertisement, which came before the kill),
        // and what polling lvsadm adds.
        #expect(takeover != nil && takeover! <= 4000, "backup took over after \(String(describing: takeover)) ms\n\(context())")
        #expect(try lab.lvsadm("-L --daemon", role: "e").hasPrefix("master sync daemon"))
        // Gratuitous ARP for each VIP at once, after 1 s and after 5 s (as keepalived repeats it).
        let announced = waitFor(limit: 8) { lab.logText("arp").components(separatedBy: "who-has \(Self.natVIP) tell \(Self.natVIP)").count - 1 >= 3 }
        #expect(announced != nil, "\(lab.logText("arp"))")
        let metrics = try lab.inside("e", "curl", "-sS", "http://127.0.0.1:19190/metrics")
        let labels = "instance=\"VI_1\",interface=\"\(lab.ns("e0"))\",vrid=\"51\""
        #expect(metrics.contains("lvsd_vrrp_state{\(labels),state=\"MASTER\"} 1") && metrics.contains("lvsd_vrrp_state{\(labels),state=\"BACKUP\"} 0"))
        #expect(metrics.contains("lvsd_vrrp_transitions_total{\(labels)} 2"))
        #expect(metrics.contains("lvsd_sync_daemon_running{role=\"master\",interface=\"\(lab.ns("e0"))\",syncid=\"51\"} 1"))
        let applied = metrics.split(separator: "\n").first { $0.hasPrefix("lvsd_sync_records_total{result=\"applied\"}") }
        #expect(applied.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0 > 20, "\(metrics)")

        try Data().write(to: URL(fileURLWithPath: go + ".1"))
        #expect(waitFor(limit: 20) { lab.logText("idle").contains("\"round\": 1") } != nil, "\(lab.logText("idle"))")
        let line = lab.logText("idle").split(separator: "\n").last.map(String.init) ?? ""
        #expect(line.contains("\"connections\": 15, \"ok\": 15,"), "\(line)")
        try Data().write(to: URL(fileURLWithPath: go + ".end"))

        var report: [String] = ["takeover \(takeover ?? -1) ms"]
        for (name, p) in streams {
            p.waitUntilExit()
            let out = lab.logText("iperf3-\(name)")
            let result = interruption(out)
            #expect(p.terminationStatus == 0 && result != nil && result!.lastSecond > 5_000_000, "\(name): \(out.suffix(2000))\n\(context())")
            report.append("\(name) stream interrupted \(result?.gap ?? -1) ms, last second \(Int((result?.lastSecond ?? 0) / 1e6)) Mbit/s")
        }
        print("failover: " + report.joined(separator: "; "))

        // The capture, read by a decoder written from the kernel's description of the protocol.
        usleep(300_000)
        let decoded = try lab.inside(
            "e", "/usr/bin/python3", Self.scripts.appendingPathComponent("ipvs_sync_decode.py").path,
            lab.directory.appendingPathComponent("sync.pcap").path)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(decoded.utf8)) as? [String: Any])
        let conns = (json["connections"] as? [[String: Any]]) ?? []
        #expect((json["messages"] as? Int ?? 0) > 0 && conns.allSatisfy { $0["syncid"] as? Int == 51 && $0["protocol"] as? Int == 6 })
        func methods(_ vip: String) -> Set<Int> { Set(conns.filter { $0["vaddr"] as? String == vip }.compactMap { $0["method"] as? Int }) }
        #expect(methods(Self.natVIP) == [0] && methods(Self.drVIP) == [3] && methods(Self.fullNATVIP) == [5])
        let fullNAT = conns.filter { $0["vaddr"] as? String == Self.fullNATVIP }
        #expect(
            !fullNAT.isEmpty
                && fullNAT.allSatisfy { c in
                    ((c["options"] as? [[String: Any]]) ?? []).contains { $0["type"] as? Int == 0x48 && ($0["data"] as? String)?.hasPrefix("c6130064") == true }
                })
        #expect(conns.contains { $0["state"] as? Int == 1 && $0["timeout"] as? Int == 900 && $0["caddr"] as? String == Lab.client })
    }
}
