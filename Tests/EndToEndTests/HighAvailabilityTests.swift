import Foundation
import LVSLab
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
              let first = (json["vrrp"] as? [[String: Any]])?.first, let state = first["state"] as? String else { return nil }
        return (state, first["master"] as? String)
    }

    /// Polls until `condition`; the milliseconds it took, or nil after `limit` seconds.
    func waitFor(limit: Double, _ condition: () -> Bool) -> Int? {
        let start = Date()
        while Date().timeIntervalSince(start) < limit {
            if condition() { return Int(Date().timeIntervalSince(start) * 1000) }
            usleep(50_000)
        }
        return nil
    }

    func vrrpInstance(interface: String, priority: Int, addresses: [String], router: Int = 51) -> String {
        """
        vrrp_instance VI_1 {
            state BACKUP
            interface \(interface)
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
        _ = try lab.inside("rt", "/usr/bin/python3", "-c", "import socket; socket.socket(2, 2).sendto(b'?', ('\(address)', 9))", check: false)
        usleep(200_000)
        return try lab.inside("rt", "ip", "neigh", "show", address)
    }

    func mac(_ lab: Lab, _ role: String) throws -> String {
        try lab.inside(role, "cat", "/sys/class/net/\(lab.ns(role + "0"))/address").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func lvsdAndKeepalivedShareOneVirtualRouter() throws {
        let lab = try Lab(prefix: "ltvr", bin: Self.bin, servers: 1)
        defer { lab.teardown() }
        try lab.addHost("k", address: Self.keepalivedHost, address6: "2001:db8:1::4")
        let vip = "198.19.0.50"
        let global = "global_defs {\n    vrrp_version 3\n    script_user root\n}\n"
        let kconf = try write(lab, "keepalived.conf", global + vrrpInstance(interface: lab.ns("k0"), priority: 100, addresses: ["\(vip)/24"]))
        let keepalivedArgs = ["keepalived", "-n", "-l", "-D", "-P", "-f", kconf, "-p", lab.directory.appendingPathComponent("k.pid").path,
                              "-r", lab.directory.appendingPathComponent("k-vrrp.pid").path]
        let keepalived = try lab.start("k", keepalivedArgs, logName: "keepalived")
        let lconf = try write(lab, "lvsd.conf", global + vrrpInstance(interface: lab.ns("d0"), priority: 150, addresses: [vip]))
        var lvsd = try lab.startDirector(extra: ["--keepalived", lconf])
        func keepalivedHoldsVIP() -> Bool { ((try? lab.inside("k", "ip", "-4", "addr", "show", "dev", lab.ns("k0"))) ?? "").contains(vip + "/") }
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))\n--- keepalived ---\n\(lab.logText("keepalived"))" }

        // Higher priority: lvsd is master, keepalived backup; the router reaches the VIP at lvsd.
        let elected = waitFor(limit: 10) { vrrp(lab)?.state == "MASTER" }
        #expect(elected != nil, "\(context())")
        #expect(waitFor(limit: 5) { lab.logText("keepalived").contains("Entering BACKUP STATE") } != nil)
        #expect(!keepalivedHoldsVIP())
        #expect(try routerSees(lab, vip).contains(try mac(lab, "d")))

        // lvsd dies: keepalived takes over within 3 × advert_int + skew (3.61 s at priority 100).
        kill(lvsd.processIdentifier, SIGKILL)
        lvsd.waitUntilExit()
        let takeover = waitFor(limit: 8) { keepalivedHoldsVIP() }
        #expect(takeover != nil && takeover! <= 4500, "keepalived took over after \(String(describing: takeover)) ms\n\(context())")
        print("keepalived took over from a killed lvsd in \(takeover ?? -1) ms")
        #expect(waitFor(limit: 3) { ((try? routerSees(lab, vip)) ?? "").contains((try? mac(lab, "k")) ?? "?") } != nil)

        // lvsd back at a lower priority: backup, and it names keepalived as the master.
        _ = try write(lab, "lvsd.conf", global + vrrpInstance(interface: lab.ns("d0"), priority: 50, addresses: [vip]))
        lvsd = try lab.startDirector(extra: ["--keepalived", lconf])
        #expect(waitFor(limit: 5) { vrrp(lab)?.master == Self.keepalivedHost } != nil, "\(String(describing: vrrp(lab)))\n\(context())")
        usleep(4_500_000)  // longer than its master-down interval: it must still be backup
        #expect(vrrp(lab)?.state == "BACKUP" && keepalivedHoldsVIP())

        // keepalived stops (and resigns with priority 0): lvsd takes over, keepalived lets the VIP go.
        kill(keepalived.processIdentifier, SIGTERM)
        let resign = waitFor(limit: 5) { vrrp(lab)?.state == "MASTER" }
        #expect(resign != nil && resign! <= 2000, "lvsd took over after \(String(describing: resign)) ms\n\(context())")
        print("lvsd took over from a stopping keepalived in \(resign ?? -1) ms")
        #expect(waitFor(limit: 5) { !keepalivedHoldsVIP() } != nil)
        #expect(waitFor(limit: 3) { ((try? routerSees(lab, vip)) ?? "").contains((try? mac(lab, "d")) ?? "?") } != nil)
        _ = lvsd
    }
}
