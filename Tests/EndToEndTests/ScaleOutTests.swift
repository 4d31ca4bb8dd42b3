import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// Beyond one director: three lvsd directors announce their VIPs over BGP
/// (each running BIRD) to a router running BIRD, which spreads the
/// clients' flows over them with ECMP (an L4 hash). The directors schedule
/// with `mh-sorted`, each given the real servers in another order, and take
/// a flow begun elsewhere with `--sloppy-tcp`: whichever director a flow
/// reaches, it goes to the same real server, so a director's death costs
/// no connection.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct ScaleOutTests {
    static let bin = Executables.directory
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ha")
    static let drVIP = "198.19.2.10"
    static let tunVIP = "198.19.2.11"
    static let directors = [("d", Lab.director), ("e", "198.19.0.2"), ("f", "198.19.0.3")]
    /// The client's extra addresses: flows from many sources, as on the Internet.
    static let sources = (101...110).map { "198.18.0.\($0)" }

    /// The router's BIRD: a session to each director, their routes into the
    /// kernel as one multipath route.
    func routerConfiguration(_ lab: Lab) -> String {
        var text = """
            log "\(lab.directory.appendingPathComponent("bird-rt.log").path)" all;
            router id \(Lab.router);
            protocol device {}
            protocol kernel { ipv4 { import none; export all; }; merge paths on; }

            """
        for (role, address) in Self.directors {
            text += """
                protocol bgp \(role) {
                    local \(Lab.router) as 65000; neighbor \(address) as 65001; connect delay time 1; connect retry time 2;
                    ipv4 { import all; export none; };
                }

                """
        }
        return text
    }

    /// A director's BIRD, as an operator writes it: lvsd's route file included, its protocol exported.
    func directorConfiguration(_ lab: Lab, _ role: String, _ address: String) -> String {
        """
        log "\(lab.directory.appendingPathComponent("bird-\(role).log").path)" all;
        router id \(address);
        protocol device {}
        include "\(lab.directory.appendingPathComponent("bgp-\(role)/bgp-routes.conf").path)";
        protocol bgp uplink {
            local \(address) as 65001;
            neighbor \(Lab.router) as 65000;
            connect delay time 1;
            connect retry time 2;
            ipv4 { import none; export where proto = "lvsd4"; };
        }

        """
    }

    /// The same services on every director, the real servers added in another order on each.
    func rules(_ order: [Int]) -> String {
        var text = ""
        for (vip, method) in [(Self.drVIP, "-g"), (Self.tunVIP, "-i")] {
            // Port 80: many idle connections from few clients, spread by port too; 5201: an iperf3 client's connections together.
            text += "-A -t \(vip):80 -s mh -b mh-port,mh-sorted\n-A -t \(vip):5201 -s mh -b mh-sorted\n"
            for i in order { text += "-a -t \(vip):80 -r \(Lab.real(i)) \(method)\n-a -t \(vip):5201 -r \(Lab.real(i)) \(method)\n" }
        }
        return text
    }

    /// How many paths the router's kernel has to `vip`.
    func paths(_ lab: Lab, _ vip: String) -> Int {
        let route = (try? lab.inside("rt", "ip", "route", "show", vip)) ?? ""
        let nexthops = route.components(separatedBy: "nexthop via").count - 1
        return nexthops > 0 ? nexthops : route.contains(" via ") ? 1 : 0
    }

    /// The router's BIRD: how many of its BGP sessions are up.
    func sessions(_ lab: Lab) -> Int {
        let out = (try? lab.inside("rt", "birdc", "-s", lab.directory.appendingPathComponent("bird-rt.ctl").path, "show", "protocols")) ?? ""
        return out.split(separator: "\n").filter { $0.contains(" BGP ") && $0.contains("Established") }.count
    }

    /// Round `k` of many_clients.py (started with `go`): how many connections answered again, and its line.
    func clientRound(_ lab: Lab, _ go: String, _ k: Int, limit: Double) -> (ok: Int, line: String) {
        _ = FileManager.default.createFile(atPath: "\(go).\(k)", contents: nil)
        _ = waitFor(limit: limit) { lab.logText("clients").contains("\"round\": \(k)") }
        let line = lab.logText("clients").split(separator: "\n").last { $0.contains("\"round\": \(k)") }.map(String.init) ?? ""
        let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        return ((json?["ok"] as? Int) ?? 0, line)
    }

    @discardableResult
    func startDirector(_ lab: Lab, _ role: String) throws -> RunningProcess {
        try lab.startDirector(extra: directorArguments(lab, role), role: role)
    }

    func directorArguments(_ lab: Lab, _ role: String) -> [String] {
        [
            "--sloppy-tcp", "--rules", lab.directory.appendingPathComponent("rules-\(role)").path,
            "--bird-config", lab.directory.appendingPathComponent("bird-\(role).conf").path,
            "--bird-directory", lab.directory.appendingPathComponent("bgp-\(role)").path, "--bgp-withdraw-delay", "1",
        ]
    }

    /// `lvsd --takeover` in `role`'s namespace, with its arguments.
    func takeOver(_ lab: Lab, _ role: String, log: String) throws -> RunningProcess {
        try lab.takeOver(extra: directorArguments(lab, role), role: role, logName: log)
    }

    /// The lab with two more directors (e, f), nginx and iperf3 on the real
    /// servers (their replies routed past the directors), the client's
    /// extra addresses, and the router's BIRD: ECMP on the 5-tuple, as
    /// routers in front of load balancers hash, and no ICMP redirect (it
    /// would send replies to a local address straight to its director,
    /// and on to a dead one after it dies).
    func threeDirectorLab(_ prefix: String, queues: Int = 1) throws -> Lab {
        let lab = try Lab(prefix: prefix, bin: Self.bin, servers: 3, queues: queues)
        do {
            try lab.addHost("e", address: Self.directors[1].1, address6: "2001:db8:1::2")
            try lab.addHost("f", address: Self.directors[2].1, address6: "2001:db8:1::3")
            try lab.gateway(viaDirector: false)
            try lab.startNginx(keepalive: 300)
            for i in 1...3 { try lab.start("r\(i)", ["iperf3", "-s", "-p", "5201"], logName: "iperf3-server\(i)") }
            for s in Self.sources { try lab.inside("c", "ip", "addr", "add", s + "/24", "dev", lab.ns("c0")) }
            try lab.inside("rt", "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
            for conf in ["all", "br0"] { try lab.inside("rt", "sysctl", "-qw", "net.ipv4.conf.\(conf).send_redirects=0") }
            let routerConf = lab.directory.appendingPathComponent("bird-rt.conf").path
            try routerConfiguration(lab).write(toFile: routerConf, atomically: true, encoding: .utf8)
            try lab.start("rt", ["bird", "-f", "-c", routerConf, "-s", lab.directory.appendingPathComponent("bird-rt.ctl").path], logName: "bird-rt")
            return lab
        } catch {
            lab.teardown()
            throw error
        }
    }

    /// A director handed over to a new lvsd keeps its BGP session and its
    /// route: the new lvsd keeps the old one's BIRD (its lifeline held
    /// open before the old one exits), so the router never loses the path.
    @Test func aHandoverKeepsTheAnnouncement() throws {
        let lab = try threeDirectorLab("ltbgh")
        defer { lab.teardown() }
        try directorConfiguration(lab, "d", Lab.director).write(
            toFile: lab.directory.appendingPathComponent("bird-d.conf").path, atomically: true, encoding: .utf8)
        try rules([1, 2, 3]).write(toFile: lab.directory.appendingPathComponent("rules-d").path, atomically: true, encoding: .utf8)
        let old = try startDirector(lab, "d")
        let context = { "--- old ---\n\(lab.logText("lvsd"))\n--- new ---\n\(lab.logText("lvsd-new"))\n--- router ---\n\(lab.logText("bird-rt"))" }
        #expect(waitFor(limit: 30) { paths(lab, Self.drVIP) == 1 } != nil, "\(context())")
        let new = try takeOver(lab, "d", log: "lvsd-new")
        // The router's path, sampled every 10 ms from the start of the handover until 3 s after the old lvsd's exit.
        var lost = 0
        var samples = 0
        var exited: Date? = nil
        while exited.map({ Date().timeIntervalSince($0) < 3 }) ?? (samples < 2000) {
            if paths(lab, Self.drVIP) != 1 { lost += 1 }
            samples += 1
            if exited == nil && !old.isRunning { exited = Date() }
            usleep(10_000)
        }
        print("BGP: handover: the router had no path in \(lost) of \(samples) samples, \(sessions(lab)) session(s) up")
        #expect(exited != nil && lost == 0 && sessions(lab) == 1 && new.isRunning, "\(context())")
        let json = try lab.lvsadm("-L -n --json")
        #expect(json.contains("\"announced\" : true"), "\(json.suffix(600))\n\(context())")
        #expect(lab.logText("lvsd-new").contains("kept from the previous lvsd"), "\(context())")
    }

    /// 500 idle keep-alive connections to each of the DR and TUN VIPs, from the client's addresses in turn.
    func startIdleClients(_ lab: Lab, go: String) throws {
        try lab.start(
            "c",
            [
                "/usr/bin/python3", Self.scripts.appendingPathComponent("many_clients.py").path, go, "500", Self.sources.joined(separator: ","),
                "\(Self.drVIP):80", "\(Self.tunVIP):80",
            ], logName: "clients")
        #expect(waitFor(limit: 90) { lab.logText("clients").contains("ready") } != nil, "\(lab.logText("clients"))")
    }

    /// DR and TUN on the real servers, and the three directors, each given
    /// the real servers in another order.
    func startDRAndTUN(_ lab: Lab) throws -> [String: RunningProcess] {
        for i in 1...3 {
            try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Self.drVIP)
            try lab.start("r\(i)", [Self.bin.appendingPathComponent("lvs-realserver").path, "tunnel", Self.tunVIP], logName: "tunnel\(i)")
        }
        let orders = ["d": [1, 2, 3], "e": [3, 1, 2], "f": [2, 3, 1]]
        var processes: [String: RunningProcess] = [:]
        for (role, address) in Self.directors {
            try directorConfiguration(lab, role, address).write(
                toFile: lab.directory.appendingPathComponent("bird-\(role).conf").path, atomically: true, encoding: .utf8)
            try rules(orders[role]!).write(toFile: lab.directory.appendingPathComponent("rules-\(role)").path, atomically: true, encoding: .utf8)
            processes[role] = try startDirector(lab, role)
        }
        return processes
    }

    /// 1000 idle keep-alive connections (DR and TUN) and two iperf3
    /// streams through three directors, each handed to a new lvsd in
    /// turn (`--takeover`, an upgrade of the fleet): every connection
    /// answers after each, the router keeps 3 paths and 3 sessions throughout.
    @Test func threeDirectorsHandedOverInTurnLoseNoConnection() throws {
        let lab = try threeDirectorLab("ltbgu")
        defer { lab.teardown() }
        let processes = try startDRAndTUN(lab)
        let context = {
            Self.directors.map { "--- lvsd \($0.0) ---\n\(lab.logText($0.0 == "d" ? "lvsd" : "lvsd-" + $0.0))\n\(lab.logText("next-" + $0.0))" }
                .joined(separator: "\n") + "\n--- router ---\n\(lab.logText("bird-rt"))"
        }
        #expect(waitFor(limit: 30) { paths(lab, Self.drVIP) == 3 && paths(lab, Self.tunVIP) == 3 } != nil, "\(context())")
        let go = lab.directory.appendingPathComponent("go").path
        try startIdleClients(lab, go: go)
        var streams: [(String, RunningProcess)] = []
        for (k, vip) in [Self.drVIP, Self.tunVIP].enumerated() {
            streams.append(
                (
                    vip,
                    try lab.start(
                        "c", ["iperf3", "-c", vip, "-p", "5201", "-B", Self.sources[k], "-t", "20", "-b", "50M", "-i", "0.1", "--json"],
                        logName: "iperf3-\(k)")
                ))
        }
        usleep(2_000_000)
        for (k, (role, _)) in Self.directors.enumerated() {
            let started = Date()
            _ = try takeOver(lab, role, log: "next-" + role)
            var fewer = 0
            while processes[role]!.isRunning && Date().timeIntervalSince(started) < 10 {
                if paths(lab, Self.drVIP) != 3 { fewer += 1 }
                usleep(10_000)
            }
            let (ok, line) = clientRound(lab, go, k + 1, limit: 60)
            print("BGP: \(role) handed over in \(Int(Date().timeIntervalSince(started) * 1000)) ms (router short of a path in \(fewer) samples): \(line)")
            #expect(!processes[role]!.isRunning && fewer == 0 && ok == 1000 && sessions(lab) == 3, "\(line)\n\(context())")
        }
        for (vip, p) in streams {
            p.waitUntilExit()
            let out = lab.logText("iperf3-\(vip == Self.drVIP ? 0 : 1)")
            let result = interruption(out)
            #expect(p.terminationStatus == 0 && result != nil && result!.lastSecond > 10_000_000, "\(vip): \(out.suffix(1500))\n\(context())")
            print("BGP: handovers: iperf3 through \(vip == Self.drVIP ? "DR" : "TUN") longest stall \(result?.gap ?? -1) ms")
        }
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }

    /// 1000 idle keep-alive connections (DR and TUN) and two iperf3
    /// streams through three directors; one director killed with SIGKILL,
    /// then started again: every connection answers after each, on the
    /// real server it began with.
    @Test func aDirectorKilledAndRestartedLosesNoConnection() throws {
        let lab = try threeDirectorLab("ltbgp")
        defer { lab.teardown() }
        var processes = try startDRAndTUN(lab)
        let context = { fleetContext(lab) }
        let announced = waitFor(limit: 30) { paths(lab, Self.drVIP) == 3 && paths(lab, Self.tunVIP) == 3 }
        #expect(announced != nil, "\(context())")
        guard announced != nil else { return }
        print("BGP: both VIPs on 3 paths at the router \(announced!) ms after the directors started")

        // The idle connections, then the streams.
        let go = lab.directory.appendingPathComponent("go").path
        try startIdleClients(lab, go: go)
        var perDirector: [String] = []
        for (role, _) in Self.directors {
            let listed = (try? lab.lvsadm("-L -n -c", role: role)) ?? ""
            perDirector.append("\(role) \(listed.split(separator: "\n").filter { $0.contains(Self.drVIP + ":80") || $0.contains(Self.tunVIP + ":80") }.count)")
        }
        print("BGP: connections each director saw begin: \(perDirector.joined(separator: ", "))")
        var streams: [(String, RunningProcess)] = []
        for (k, vip) in [Self.drVIP, Self.tunVIP].enumerated() {
            let p = try lab.start(
                "c", ["iperf3", "-c", vip, "-p", "5201", "-B", Self.sources[k], "-t", "16", "-b", "50M", "-i", "0.1", "--json"],
                logName: "iperf3-\(k)")
            streams.append((vip, p))
        }
        usleep(3_000_000)

        // The director that carries the DR stream dies: its BIRD goes with it, the router withdraws its paths and rehashes.
        let victim =
            Self.directors.map(\.0).first { role in
                ((try? lab.lvsadm("-L -n -c", role: role)) ?? "").split(separator: "\n").contains { $0.contains(Self.drVIP + ":5201") }
            } ?? "e"
        let survivors = Self.directors.map(\.0).filter { $0 != victim }
        let killedAt = Date()
        kill(processes[victim]!.processIdentifier, SIGKILL)
        processes[victim]!.waitUntilExit()
        let rehashed = waitFor(limit: 10, every: 0.01) { paths(lab, Self.drVIP) == 2 && paths(lab, Self.tunVIP) == 2 }
        let sessionDown = sessions(lab) == 2
        #expect(rehashed != nil && sessionDown, "\(context())")
        print("BGP: SIGKILL to 2 paths at the router's kernel in \(rehashed ?? -1) ms")
        usleep(1_000_000)
        let (ok1, round1) = clientRound(lab, go, 1, limit: 60)
        print("BGP: after the kill of \(victim) (\(Int(Date().timeIntervalSince(killedAt) * 1000)) ms): \(round1)")
        #expect(ok1 == 1000, "\(round1)\n\(context())")
        // The victim's connections were taken up mid-flow (--sloppy-tcp): the survivors now hold every one.
        let held = survivors.map { role in
            ((try? lab.lvsadm("-L -n -c", role: role)) ?? "").split(separator: "\n").filter {
                $0.contains(Self.drVIP + ":80") || $0.contains(Self.tunVIP + ":80")
            }
            .count
        }
        #expect(held.reduce(0, +) >= 1000, "\(held)")

        for (vip, p) in streams {
            p.waitUntilExit()
            let out = lab.logText("iperf3-\(vip == Self.drVIP ? 0 : 1)")
            let result = interruption(out)
            #expect(p.terminationStatus == 0 && result != nil && result!.lastSecond > 10_000_000, "\(vip): \(out.suffix(1500))\n\(context())")
            print(
                "BGP: iperf3 through \(vip == Self.drVIP ? "DR" : "TUN") longest stall \(result?.gap ?? -1) ms, last second \(Int((result?.lastSecond ?? 0) / 1e6)) Mbit/s"
            )
        }

        // The director back: it announces again, ECMP moves flows back to it, and they go on.
        processes[victim] = try startDirector(lab, victim)
        let back = waitFor(limit: 30) { paths(lab, Self.drVIP) == 3 && paths(lab, Self.tunVIP) == 3 }
        #expect(back != nil, "\(context())")
        print("BGP: restarted director on 3 paths again after \(back ?? -1) ms")
        let (ok2, round2) = clientRound(lab, go, 2, limit: 60)
        print("BGP: after the restart: \(round2)")
        #expect(ok2 == 1000, "\(round2)\n\(context())")
        let json = try lab.lvsadm("-L -n --json", role: victim)
        #expect(json.contains("\"bgp\"") && json.contains("\"announced\" : true"), "\(json.suffix(600))")

        // A graceful stop withdraws first: the router is down to 2 paths before lvsd has gone.
        processes[survivors[0]]!.signal(SIGTERM)
        let withdrawn = waitFor(limit: 10, every: 0.01) { paths(lab, Self.drVIP) == 2 }
        #expect(withdrawn != nil && processes[survivors[0]]!.isRunning, "\(context())")
        print("BGP: SIGTERM to withdrawn in \(withdrawn ?? -1) ms, lvsd still forwarding")
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }

    static let fullNATVIP = "198.19.2.12"
    /// Each director's own local address, announced by it, and by the others as a longer path.
    static let lips = ["d": "198.19.3.1", "e": "198.19.3.2", "f": "198.19.3.3"]

    /// A FULLNAT director's BIRD: lvsd's routes (the VIP and its own local
    /// address), and the other directors' local addresses behind a longer
    /// AS path, for the router to use once their own director is gone.
    func fullNATDirectorConfiguration(_ lab: Lab, _ role: String, _ address: String) -> String {
        let others = Self.lips.filter { $0.key != role }.values.sorted().map { "    route \($0)/32 blackhole;" }.joined(separator: "\n")
        return """
            log "\(lab.directory.appendingPathComponent("bird-\(role).log").path)" all;
            router id \(address);
            protocol device {}
            include "\(lab.directory.appendingPathComponent("bgp-\(role)/bgp-routes.conf").path)";
            protocol static others {
                ipv4;
            \(others)
            }
            filter lvsd_export {
                if proto = "lvsd4" then accept;
                if proto = "others" then { bgp_path.prepend(65001); bgp_path.prepend(65001); accept; }
                reject;
            }
            protocol bgp uplink {
                local \(address) as 65001;
                neighbor \(Lab.router) as 65000;
                connect delay time 1;
                connect retry time 2;
                ipv4 { import none; export filter lvsd_export; };
            }

            """
    }

    /// FULLNAT across directors: each has its own local address and syncs
    /// its connections to the others (a master sync daemon each, and a
    /// backup taking every master's); when one dies, the router sends its
    /// clients' flows to the others by ECMP and the real servers' replies
    /// to its local address to the others by their longer path, and the
    /// synced connections carry on: 1000 idle connections, and an iperf3
    /// stream through the director that is killed.
    @Test func fullNATFlowsOutliveTheirDirector() throws {
        let lab = try threeDirectorLab("ltbgpf")
        defer { lab.teardown() }
        let processes = try startSyncingDirectors(
            lab, vip: Self.fullNATVIP, method: "-b", bird: fullNATDirectorConfiguration,
            service: { role, port in "-P -t \(Self.fullNATVIP):\(port) -z \(Self.lips[role]!)\n" })
        let context = { fleetContext(lab) }
        let announced = waitFor(limit: 30) { paths(lab, Self.fullNATVIP) == 3 && Self.lips.values.allSatisfy { paths(lab, $0) == 1 } }
        #expect(announced != nil, "\(context())")
        guard announced != nil else { return }

        // The director that carries the stream dies (its local address is the one the real server answers).
        let (go, stream, victim) = try startSyncedLoad(lab, vip: Self.fullNATVIP, context: context)
        let survivors = Self.directors.map(\.0).filter { $0 != victim }
        let drops = { survivors.map { "\($0): \((try? lab.lvsadm("-L --drops", role: $0)) ?? "")" }.joined(separator: "\n") }
        kill(processes[victim]!.processIdentifier, SIGKILL)
        processes[victim]!.waitUntilExit()
        let moved = waitFor(limit: 10, every: 0.01) { paths(lab, Self.fullNATVIP) == 2 && paths(lab, Self.lips[victim]!) == 2 }
        #expect(moved != nil, "\(context())")
        print("BGP FULLNAT: SIGKILL to the VIP on 2 paths and the dead director's local address on the others in \(moved ?? -1) ms")
        usleep(1_000_000)
        let (ok, round1) = clientRound(lab, go, 1, limit: 120)
        print("BGP FULLNAT: after the kill: \(round1)")
        #expect(ok >= 990, "\(round1)\n\(drops())\n\(context())")
        expectStreamWentOn(lab, stream, label: "BGP FULLNAT", victim: victim, context: context)
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }

    static let natVIP = "198.19.2.13"
    /// Each director's gateway address for the real servers, a VRRP
    /// instance it is master of, with the other directors as its backups.
    static let gateways = ["d": "198.19.0.21", "e": "198.19.0.22", "f": "198.19.0.23"]

    /// A NAT director's VRRP part: master of its own gateway address, backup of the others'.
    func gatewayInstances(_ lab: Lab, _ role: String) -> String {
        var text = "global_defs {\n    vrrp_version 3\n}\n"
        for (k, (owner, address)) in Self.gateways.sorted(by: { $0.key < $1.key }).enumerated() {
            text += """
                vrrp_instance GW_\(owner) {
                    state BACKUP
                    interface \(lab.ns(role + "0"))
                    virtual_router_id \(61 + k)
                    priority \(owner == role ? 150 : 100)
                    advert_int 0.2
                    virtual_ipaddress {
                        \(address)
                    }
                }

                """
        }
        return text
    }

    /// A NAT director's own arguments: its gateway instances, replies of other directors' connections taken, 2 workers.
    func natArguments(_ lab: Lab, _ role: String) throws -> [String] {
        let vrrp = lab.directory.appendingPathComponent("keepalived-\(role).conf").path
        try gatewayInstances(lab, role).write(toFile: vrrp, atomically: true, encoding: .utf8)
        return ["--sloppy-nat", "--keepalived", vrrp, "--workers", "2"]
    }

    /// Each director's VRRP instances by name, and their states.
    func gatewayStates(_ lab: Lab, _ role: String) -> [String: String] {
        guard let text = try? lab.lvsadm("-L -n --json", role: role),
            let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let instances = json["vrrp"] as? [[String: Any]]
        else { return [:] }
        var states: [String: String] = [:]
        for i in instances { if let n = i["name"] as? String, let s = i["state"] as? String { states[n] = s } }
        return states
    }

    /// NAT across directors: the real servers' default route spreads their
    /// replies over the three directors' gateway addresses (ECMP on the
    /// 5-tuple), so a reply often reaches a director other than the one
    /// that scheduled its connection, which makes the connection from the
    /// reply (`--sloppy-nat`) before any sync message can reach it. Each
    /// director syncs its connections to the others; when one dies, the
    /// router moves its clients' flows to the others, a survivor takes its
    /// gateway address by VRRP, and the synced connections carry on: 1000
    /// idle connections, and an iperf3 stream through the director that is
    /// killed. Then it comes back, restores its connections from its state
    /// file and takes its gateway address and paths back. Each director
    /// runs 2 workers on 2-queue veths: a reply meets the worker that owns
    /// its connection on whichever director it reaches.
    @Test func natFlowsOutliveTheirDirector() throws {
        let lab = try threeDirectorLab("ltbgpn", queues: 2)
        defer { lab.teardown() }
        for i in 1...3 {
            try lab.inside("r\(i)", "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
            try lab.inside(
                "r\(i)", arguments: ["ip", "route", "replace", "default"] + Self.gateways.values.sorted().flatMap { ["nexthop", "via", $0] })
        }
        var processes = try startSyncingDirectors(
            lab, vip: Self.natVIP, method: "-m", bird: directorConfiguration,
            extra: { try natArguments(lab, $0) })
        let context = { fleetContext(lab) }
        let ready = waitFor(limit: 30) {
            paths(lab, Self.natVIP) == 3 && Self.directors.allSatisfy { gatewayStates(lab, $0.0)["GW_\($0.0)"] == "MASTER" }
        }
        #expect(ready != nil, "\(Self.directors.map { gatewayStates(lab, $0.0) })\n\(context())")
        guard ready != nil else { return }

        // The director that carries the stream's client side dies, and with it one of the real servers' three gateways.
        let (go, stream, victim) = try startSyncedLoad(lab, vip: Self.natVIP, context: context)
        let survivors = Self.directors.map(\.0).filter { $0 != victim }
        let drops = { survivors.map { "\($0): \((try? lab.lvsadm("-L --drops", role: $0)) ?? "")" }.joined(separator: "\n") }
        let killedAt = Date()
        kill(processes[victim]!.processIdentifier, SIGKILL)
        processes[victim]!.waitUntilExit()
        // Milliseconds from the kill: to the dead director's gateway address at a survivor, to 2 paths at the router.
        var gateway: Int? = nil
        var moved: Int? = nil
        _ = waitFor(limit: 10, every: 0.01) {
            let ms = Int(Date().timeIntervalSince(killedAt) * 1000)
            if gateway == nil && survivors.contains(where: { gatewayStates(lab, $0)["GW_\(victim)"] == "MASTER" }) { gateway = ms }
            if moved == nil && paths(lab, Self.natVIP) == 2 { moved = ms }
            return gateway != nil && moved != nil
        }
        #expect(gateway != nil && moved != nil, "\(context())")
        print("BGP NAT: SIGKILL to the VIP on 2 paths at the router in \(moved ?? -1) ms, to its gateway address at a survivor (VRRP) in \(gateway ?? -1) ms")
        usleep(1_000_000)
        let (ok, round1) = clientRound(lab, go, 1, limit: 120)
        print("BGP NAT: after the kill: \(round1)")
        #expect(ok >= 990, "\(round1)\n\(drops())\n\(context())")
        expectStreamWentOn(lab, stream, label: "BGP NAT", victim: victim, context: context)

        // The director back, its connections restored from its state file: it takes back its gateway address
        // (a higher priority) and its paths, and the flows that ECMP and the real servers' routes move back go on.
        processes[victim] = try startSyncingDirector(lab, victim, extra: try natArguments(lab, victim))
        let back = waitFor(limit: 30) { paths(lab, Self.natVIP) == 3 && gatewayStates(lab, victim)["GW_\(victim)"] == "MASTER" }
        #expect(back != nil, "\(context())")
        let restored = lab.logText(victim == "d" ? "lvsd" : "lvsd-" + victim).split(separator: "\n").last {
            $0.contains("state file") && $0.contains("restored")
        }
        print("BGP NAT: restarted director on 3 paths and master of its gateway address after \(back ?? -1) ms; \(restored ?? "nothing restored")")
        let (ok2, round2) = clientRound(lab, go, 2, limit: 120)
        print("BGP NAT: after the restart: \(round2)")
        #expect(ok2 >= 990, "\(round2)\n\(context())")
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }

    /// Every director's log and the router's routes and BIRD log, for a failed expectation.
    func fleetContext(_ lab: Lab) -> String {
        Self.directors.map { "--- lvsd \($0.0) ---\n\(lab.logText($0.0 == "d" ? "lvsd" : "lvsd-" + $0.0))" }.joined(separator: "\n")
            + "\n--- router ---\n\((try? lab.inside("rt", "ip", "route")) ?? "")\n\(lab.logText("bird-rt"))"
    }

    /// 1000 idle keep-alive connections to `vip`:80 from the client's
    /// addresses, until every director holds every one (its own and the
    /// others' from their sync daemons); then an iperf3 stream to
    /// `vip`:5201 for 12 s. Returns the clients' go file, the stream, and
    /// the director that carries the stream's client side.
    func startSyncedLoad(_ lab: Lab, vip: String, context: () -> String) throws -> (go: String, stream: RunningProcess, carrier: String) {
        let go = lab.directory.appendingPathComponent("go").path
        try lab.start(
            "c",
            ["/usr/bin/python3", Self.scripts.appendingPathComponent("many_clients.py").path, go, "1000", Self.sources.joined(separator: ","), "\(vip):80"],
            logName: "clients")
        #expect(waitFor(limit: 90) { lab.logText("clients").contains("ready") } != nil, "\(lab.logText("clients"))\n\(context())")
        func held(_ role: String) -> Int {
            ((try? lab.lvsadm("-L -n -c", role: role)) ?? "").split(separator: "\n").filter { $0.contains(vip + ":80") }.count
        }
        let synced = waitFor(limit: 10) { Self.directors.allSatisfy { held($0.0) >= 1000 } }
        #expect(synced != nil, "\(Self.directors.map { "\($0.0) \(held($0.0))" })")
        let stream = try lab.start(
            "c", ["iperf3", "-c", vip, "-p", "5201", "-B", Self.sources[3], "-t", "12", "-b", "50M", "-i", "0.1", "--json"], logName: "iperf3-stream")
        usleep(2_000_000)
        func packets(_ role: String) -> Int {
            let stats = (try? lab.lvsadm("-L -n --stats --exact", role: role)) ?? ""
            let row = stats.split(separator: "\n").first { $0.hasPrefix("TCP  \(vip):5201") }
            return row.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[3]) } ?? 0
        }
        return (go, stream, Self.directors.map(\.0).max { packets($0) < packets($1) }!)
    }

    /// The stream of `startSyncedLoad` went on through `victim`'s death: its longest stall printed, its last second above 10 Mbit/s.
    func expectStreamWentOn(_ lab: Lab, _ stream: RunningProcess, label: String, victim: String, context: () -> String) {
        stream.waitUntilExit()
        let result = interruption(lab.logText("iperf3-stream"))
        print(
            "\(label): iperf3 through the killed director (\(victim)): longest stall \(result?.gap ?? -1) ms, last second \(Int((result?.lastSecond ?? 0) / 1e6)) Mbit/s"
        )
        #expect(stream.terminationStatus == 0 && result != nil && result!.lastSecond > 10_000_000, "\(lab.logText("iperf3-stream").suffix(1500))\n\(context())")
    }

    /// The three directors, each with `vip`:80 (rr) and `vip`:5201 (sh, so
    /// that iperf3's control and data connections meet one server whichever
    /// director each reaches) on the three real servers by `method`, more
    /// lines per service from `service`, BIRD configured by `bird`, `extra`
    /// arguments, and two sync daemons: a master of its own syncid and a
    /// backup of every other director's (syncid 0).
    func startSyncingDirectors(
        _ lab: Lab, vip: String, method: String, bird: (Lab, String, String) -> String, service: (String, Int) -> String = { _, _ in "" },
        extra: (String) throws -> [String] = { _ in [] }
    ) throws -> [String: RunningProcess] {
        var processes: [String: RunningProcess] = [:]
        for (role, address) in Self.directors {
            try bird(lab, role, address).write(toFile: lab.directory.appendingPathComponent("bird-\(role).conf").path, atomically: true, encoding: .utf8)
            var rules = ""
            for port in [80, 5201] {
                rules += "-A -t \(vip):\(port) -s \(port == 5201 ? "sh" : "rr")\n" + service(role, port)
                for i in 1...3 { rules += "-a -t \(vip):\(port) -r \(Lab.real(i)):\(port) \(method)\n" }
            }
            try rules.write(toFile: lab.directory.appendingPathComponent("rules-\(role)").path, atomically: true, encoding: .utf8)
            processes[role] = try startSyncingDirector(lab, role, extra: try extra(role))
        }
        return processes
    }

    /// lvsd in `role` with its rules, BIRD and `extra` arguments, and its two sync daemons.
    func startSyncingDirector(_ lab: Lab, _ role: String, extra: [String]) throws -> RunningProcess {
        let syncID = Self.directors.firstIndex { $0.0 == role }! + 1
        let p = try lab.startDirector(extra: directorArguments(lab, role) + extra, role: role)
        try lab.lvsadm("--start-daemon master --mcast-interface \(lab.ns(role + "0")) --syncid \(syncID)", role: role)
        try lab.lvsadm("--start-daemon backup --mcast-interface \(lab.ns(role + "0")) --syncid 0", role: role)
        return p
    }
}
