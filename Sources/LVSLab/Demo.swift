import Dispatch
import Foundation

/// `lvsadm demo`: one client, a router, lvsd and three real servers in
/// namespaces; each forwarding method in turn with real TCP stacks: where
/// requests went, what the real server saw, and one packet's path hop by hop.
public enum Demo {
    public static func run(bin: URL, requests: Int = 30) -> Int32 {
        guard getuid() == 0 else {
            print("lvsadm demo builds network namespaces: run it as root.")
            return 1
        }
        for tool in ["ip", "curl"] where (try? Lab.exec(["which", tool])) == nil {
            print("lvsadm demo needs \(tool) (Debian: apt-get install iproute2 curl); scripts/demo installs them.")
            return 1
        }
        print("Building the network: client ─ router ─ LAN with lvsd and three real servers (198.18.0.0/15, 2001:db8::/32)…")
        let lab: Lab
        do { lab = try Lab(prefix: "lvsdemo", bin: bin) } catch {
            print("cannot build the network: \(error)")
            return 1
        }
        // Ctrl-C removes everything too.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let terminate = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        for s in [interrupt, terminate] {
            s.setEventHandler {
                print("\ninterrupted: removing the namespaces")
                lab.teardown()
                exit(130)
            }
            s.resume()
        }
        defer { lab.teardown() }
        do {
            try lab.startDirector()
            for i in 1...3 {
                try lab.startRealServerTool(i, ["serve", "--port", "8080", "--name", "rs\(i)", "--toa"], logName: "serve\(i)")
            }
            usleep(300_000)
            let macs = try MACs(lab)
            for mode in Mode.allCases {
                try show(mode, lab: lab, macs: macs, requests: requests)
            }
            print("Done: every namespace, address and process the demo made is removed.")
            return 0
        } catch {
            print("demo failed: \(error)\n--- lvsd log ---\n\(lab.logText("lvsd"))")
            return 1
        }
    }

    enum Mode: String, CaseIterable {
        case nat = "NAT"
        case dr = "DR"
        case tun = "TUN"
        case fullnat = "FULLNAT"
        var flag: String {
            switch self {
            case .nat: "-m"
            case .dr: "-g"
            case .tun: "-i"
            case .fullnat: "-b"
            }
        }
        var port: Int { self == .nat || self == .fullnat ? 80 : 8080 }
    }

    struct MACs {
        var client: String, routerClientSide: String, routerLAN: String, director: String, real: [String]
        init(_ lab: Lab) throws {
            func mac(_ role: String, _ link: String) throws -> String {
                let out = try lab.inside(role, "cat", "/sys/class/net/\(link)/address")
                return out.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            client = try mac("c", lab.ns("c0"))
            routerClientSide = try mac("rt", lab.ns("rc"))
            routerLAN = try mac("rt", "br0")
            director = try mac("d", lab.ns("d0"))
            real = try (1...3).map { try mac("r\($0)", lab.ns("r\($0)")) }
        }
    }

    static func show(_ mode: Mode, lab: Lab, macs: MACs, requests: Int) throws {
        print("\n━━ \(mode.rawValue) " + String(repeating: "━", count: 60))
        let vip = Lab.vip
        let svc = "\(vip):\(mode.port)"
        try lab.gateway(viaDirector: mode == .nat)
        switch mode {
        case .dr:
            for i in 1...3 { try lab.inside("r\(i)", lab.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", vip) }
        case .tun:
            for i in 1...3 { try lab.startRealServerTool(i, ["tunnel", vip], logName: "tunnel\(i)") }
            usleep(300_000)
        default: break
        }
        try lab.lvsadm("-A -t \(svc) -s rr")
        if mode == .fullnat { try lab.lvsadm("--add-laddr -t \(svc) -z \(Lab.lip)") }
        for i in 1...3 { try lab.lvsadm("-a -t \(svc) -r \(Lab.real(i)):8080 \(mode.flag)") }
        print(
            "$ lvsadm -A -t \(svc) -s rr" + (mode == .fullnat ? "; lvsadm --add-laddr -t \(svc) -z \(Lab.lip)" : "")
                + "; lvsadm -a -t \(svc) -r RIP:8080 \(mode.flag)  (×3)")
        let answers = try lab.requests("http://\(svc)/", count: requests)
        var spread: [String: Int] = [:]
        for a in answers { spread[String(a.split(separator: " ").first ?? "?"), default: 0] += 1 }
        print("\(answers.count)/\(requests) requests answered; spread: " + spread.keys.sorted().map { "\($0)=\(spread[$0]!)" }.joined(separator: " "))
        if let first = answers.first { print("a real server answered: \(first)") }
        // The first answer names the real server and what it saw: the path of that connection.
        let sample = answers.first ?? "rs1 peer=\(Lab.client):0"
        let words = sample.split(separator: " ").map(String.init)
        let realIndex = Int(words.first?.dropFirst(2) ?? "1") ?? 1
        let peer = words.first { $0.hasPrefix("peer=") }.map { String($0.dropFirst(5)) } ?? "?"
        let client = words.first { $0.hasPrefix("client=") }.map { String($0.dropFirst(7)) } ?? peer
        let clientEnd = client
        let realEnd = "\(Lab.real(realIndex)):8080"
        let rsMAC = macs.real[max(0, min(2, realIndex - 1))]
        print(try lab.lvsadm("-L -n --stats").split(separator: "\n").dropFirst().joined(separator: "\n"))
        print("one packet's path (addresses, then source → destination MAC):")
        func hop(_ from: String, _ to: String, _ src: String, _ dst: String, _ smac: String, _ dmac: String, _ note: String = "") {
            print(
                "  \(from.padding(toLength: 9, withPad: " ", startingAt: 0)) → \(to.padding(toLength: 9, withPad: " ", startingAt: 0)) "
                    + "\(src.padding(toLength: 20, withPad: " ", startingAt: 0)) → \(dst.padding(toLength: 20, withPad: " ", startingAt: 0)) \(smac) → \(dmac)\(note)"
            )
        }
        hop("client", "router", clientEnd, svc, macs.client, macs.routerClientSide)
        hop("router", "director", clientEnd, svc, macs.routerLAN, macs.director, "  (lvsd answered ARP for the VIP)")
        switch mode {
        case .nat:
            hop("director", "rs\(realIndex)", clientEnd, realEnd, macs.director, rsMAC, "  (destination rewritten)")
            hop("rs\(realIndex)", "director", realEnd, clientEnd, rsMAC, macs.director, "  (the director is the gateway)")
            hop("director", "router", svc, clientEnd, macs.director, macs.routerLAN, "  (source rewritten back)")
        case .dr:
            hop("director", "rs\(realIndex)", clientEnd, svc, macs.director, rsMAC, "  (only the MAC changes)")
            hop("rs\(realIndex)", "router", svc, clientEnd, rsMAC, macs.routerLAN, "  (straight back: VIP on lo)")
        case .tun:
            hop("director", "rs\(realIndex)", Lab.director, Lab.real(realIndex), macs.director, rsMAC, "  (IPIP: outer header)")
            hop("", "", clientEnd, svc, "", "", "  (inner packet, untouched)")
            hop("rs\(realIndex)", "router", svc, clientEnd, rsMAC, macs.routerLAN, "  (decapsulated by lvs-realserver tunnel)")
        case .fullnat:
            hop("director", "rs\(realIndex)", peer, realEnd, macs.director, rsMAC, "  (both rewritten, TOA carries \(client))")
            hop("rs\(realIndex)", "director", realEnd, peer, rsMAC, macs.director)
            hop("director", "router", svc, clientEnd, macs.director, macs.routerLAN, "  (both rewritten back)")
        }
        hop("router", "client", svc, clientEnd, macs.routerClientSide, macs.client)
        // Undo the mode's real-server setup.
        try lab.lvsadm("-C")
        switch mode {
        case .dr:
            for i in 1...3 { try lab.inside("r\(i)", lab.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", "--remove", vip) }
        default: break
        }
    }
}
