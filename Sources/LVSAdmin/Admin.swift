import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSPacket
import LVSSystem

#if canImport(Glibc)
import Glibc
#endif

/// lvsadm: ipvsadm's command line, run against lvsd. Output and exit
/// statuses are ipvsadm's: 2 for a wrong command line, 255 for a refused
/// operation, 1 when lvsd cannot be reached or a listed service is absent.
public struct Admin {
    public static let defaultSocket = "/run/lvsd.sock"

    public var program: String
    /// Sends one request to lvsd; replaced in tests.
    public var exchange: (ControlRequest, String) throws -> ControlResponse
    public var write: (String) -> Void
    public var writeError: (String) -> Void
    public var readInput: () -> String?
    public var environment: [String: String]
    public var listing: (ListFormat) -> Listing

    public init(program: String = "lvsadm") {
        self.program = program
        exchange = Admin.socketExchange
        write = { StandardStream.output.write($0) }
        writeError = { StandardStream.error.write($0) }
        readInput = { readLine(strippingNewline: false) }
        var env: [String: String] = [:]
        if let v = Environment.value("LVSADM_SOCKET") { env["LVSADM_SOCKET"] = v }
        environment = env
        listing = { Listing(format: $0) }
    }

    struct Unreachable: Error, CustomStringConvertible { var description: String }

    /// One request over lvsd's socket.
    public static func socketExchange(_ request: ControlRequest, path: String) throws -> ControlResponse {
        do {
            let c = try ControlConnection.connect(path: path)
            try c.send(try ControlProtocol.encode(request))
            let reply = try c.receiveMessage(limit: ControlProtocol.maxResponse)
            return try ControlProtocol.decode(ControlResponse.self, from: reply)
        } catch let e as ControlConnection.Failure {
            throw Unreachable(description: "\(e)")
        }
    }

    public func run(_ arguments: [String]) -> Int32 {
        if arguments.first == "trace" { return runTrace(Array(arguments.dropFirst())) }
        // No arguments lists everything, with names (ipvsadm's list_all).
        let inv: Invocation
        if arguments.isEmpty {
            var i = Invocation()
            i.command = .list
            inv = i
        } else {
            do { inv = try AdminCommandLine.parse(arguments) } catch {
                writeError(error.message + "\n")
                return error.exitStatus
            }
        }
        if inv.help {
            write(Self.usage(program))
            return 0
        }
        if inv.version {
            write("ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n\(program) (swift-lvs) 0.1\n")
            return 0
        }
        let socket = socketPath(inv.socketPath)
        return reportingFailures(socket: socket) { try perform(inv, socket: socket) }
    }

    /// `--socket`, else `$LVSADM_SOCKET`, else /run/lvsd.sock.
    func socketPath(_ option: String?) -> String { option ?? environment["LVSADM_SOCKET"] ?? Self.defaultSocket }

    /// Runs `body`; an unreachable lvsd or any other failure is one line and status 1.
    func reportingFailures(socket: String, _ body: () throws -> Int32) -> Int32 {
        do {
            return try body()
        } catch let e as Unreachable {
            writeError("\(program): cannot reach lvsd at \(socket): \(e.description)\n")
            return 1
        } catch {
            writeError("\(program): \(error)\n")
            return 1
        }
    }

    func perform(_ inv: Invocation, socket: String) throws -> Int32 {
        func send(_ r: ControlRequest) throws -> ControlResponse { try exchange(r, socket) }
        func snapshot(connections: Bool) throws -> TableSnapshot? {
            switch try send(.snapshot(connections: connections)) {
            case .snapshot(let s): return s
            case .failed(let e):
                writeError(e.message + "\n")
                return nil
            case .done, .trace, .handover: return nil
            }
        }
        func outcome(_ r: ControlResponse) -> Int32 {
            if case .failed(let e) = r {
                writeError(e.message + "\n")
                return 255
            }
            return 0
        }
        switch inv.command! {
        case .list:
            let conns = inv.options.contains(.connection)
            guard let s = try snapshot(connections: conns) else { return 1 }
            let list = listing(inv.format)
            if inv.json {
                if conns {
                    write(ControlProtocol.json(s.connections ?? []))
                } else if inv.options.contains(.drops) {
                    write(ControlProtocol.json(s.drops))
                } else if let key = inv.service?.key {
                    guard let one = s.services.first(where: { $0.service.key == key }) else {
                        writeError("No such service\n")
                        return 1
                    }
                    write(ControlProtocol.json(one))
                } else {
                    write(ControlProtocol.json(s))
                }
                return 0
            }
            if conns {
                write(list.connections(s.connections ?? []))
            } else if inv.options.contains(.drops) {
                write(Listing.drops(s.drops))
            } else if inv.options.contains(.health) {
                write(list.health(s.health))
            } else if inv.options.contains(.timeout) {
                write(Listing.timeouts(s.timeouts))
            } else if inv.options.contains(.daemon) {
                write(Listing.daemons(s.daemons))
            } else if let key = inv.service?.key {
                guard let one = s.services.first(where: { $0.service.key == key }) else {
                    writeError("No such service\n")
                    return 1
                }
                write(list.one(one))
            } else {
                write(list.all(s))
            }
            return 0
        case .save:
            guard let s = try snapshot(connections: false) else { return 1 }
            var format = inv.format
            format.insert(.rule)
            write(listing(format).all(s))
            return 0
        case .getLocalAddress:
            guard let s = try snapshot(connections: true) else { return 1 }
            let services = inv.service.map { k in s.services.filter { $0.service.key == k.key } } ?? s.services
            if inv.json {
                write(
                    ControlProtocol.json(
                        services.map { ["service": "\($0.service.key)", "localAddresses": $0.localAddresses.map(\.description).joined(separator: ",")] }))
            } else {
                write(listing(inv.format).localAddresses(services, connections: s.connections ?? []))
            }
            return 0
        case .compare:
            var there = ""
            if inv.comparedWith == "-" {
                while let line = readInput() { there += line }
            } else if let text = KernelFile.contents(inv.comparedWith ?? "") {
                there = text
            } else {
                writeError("\(program): cannot read \(inv.comparedWith ?? "")\n")
                return 2
            }
            guard let s = try snapshot(connections: false) else { return 1 }
            let (differences, notes) = FleetComparison.differences(here: listing([.rule, .numeric]).all(s), there: there)
            write(differences.isEmpty ? "the same services and real servers\n" : differences.map { $0 + "\n" }.joined())
            write(notes.map { "note: \($0)\n" }.joined())
            return differences.isEmpty ? 0 : 1
        case .restore:
            var text = ""
            while let line = readInput() { text += line }
            let parsed: [(line: Int, operations: [TableOperation])]
            do { parsed = try RulesFile.parse(text, file: "stdin") } catch {
                writeError(error.message + "\n")
                return 2
            }
            return outcome(try send(.apply(parsed.flatMap(\.operations))))
        case .zero:
            return outcome(try send(.zero(inv.service?.key)))
        case .startDaemon:
            return outcome(try send(.startDaemon(inv.syncDaemon)))
        case .stopDaemon:
            return outcome(try send(.stopDaemon(inv.syncDaemon.role)))
        default:
            guard let ops = inv.operations() else {
                writeError("\(program): nothing to do\n")
                return 2
            }
            return outcome(try send(.apply(ops)))
        }
    }

    public static func usage(_ program: String) -> String {
        """
        \(program) (swift-lvs), an ipvsadm v1.31 compatible command line for lvsd
        Usage:
          \(program) -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]
          \(program) -D virtual-service
          \(program) -C
          \(program) -R
          \(program) -S [-n]
          \(program) -a|e virtual-service -r server-address [options]
          \(program) -d virtual-service -r server-address
          \(program) -L|l [virtual-service] [options]
          \(program) -Z [virtual-service]
          \(program) --set tcp tcpfin udp
          \(program) --start-daemon {master|backup} [daemon-options]
          \(program) --stop-daemon {master|backup}
          \(program) -P|Q -z local-address virtual-service
          \(program) -G [virtual-service]
          \(program) --compare file|-
          \(program) -h
          \(program) trace [virtual-service] [--count N] [--wait seconds] [--json]

        Commands:
        Either long or short options are allowed.
          --add-service     -A        add virtual service with options
          --edit-service    -E        edit virtual service with options
          --delete-service  -D        delete virtual service
          --clear           -C        clear the whole table
          --restore         -R        restore rules from stdin
          --save            -S        save rules to stdout
          --compare file|-            where another director's -S -n differs from these rules
          --add-server      -a        add real server with options
          --edit-server     -e        edit real server with options
          --delete-server   -d        delete real server
          --list            -L|-l     list the table
          --zero            -Z        zero counters in a service or all services
          --set tcp tcpfin udp        set connection timeout values
          --start-daemon              start connection sync daemon
          --stop-daemon               stop connection sync daemon
          --add-laddr       -P        add a FULLNAT local address (-z) to a service
          --del-laddr       -Q        delete a FULLNAT local address
          --get-laddr       -G        list FULLNAT local addresses
          --help            -h        display this help message

        virtual-service:
          --tcp-service|-t  service-address   service-address is host[:port]
          --udp-service|-u  service-address   service-address is host[:port]
          --sctp-service    service-address   service-address is host[:port]
          --fwmark-service|-f fwmark          fwmark is an integer greater than zero

        Options:
          --ipv6         -6                   fwmark entry uses IPv6
          --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos|ch,
                                              the default scheduler is wlc.
          --pe            engine              alternate persistence engine may be sip,
                                              not set by default.
          --persistent   -p [timeout]         persistent service
          --netmask      -M netmask           persistent granularity mask
          --real-server  -r server-address    server-address is host (and port)
          --gatewaying   -g                   gatewaying (direct routing) (default)
          --ipip         -i                   ipip encapsulation (tunneling)
          --masquerading -m                   masquerading (NAT)
          --fullnat      -b                   full NAT (with -a|-e), client address in TOA
          --tun-type      type                one of ipip|gue,
                                              the default tunnel type is ipip.
          --tun-port      port                tunnel destination port
          --tun-nocsum                        tunnel encapsulation without checksum
          --tun-csum                          tunnel encapsulation with checksum
          --tun-remcsum                       tunnel encapsulation with remote checksum
          --weight       -w weight            capacity of real server
          --u-threshold  -x uthreshold        upper threshold of connections
          --l-threshold  -y lthreshold        lower threshold of connections
          --laddr        -z local-address     FULLNAT local address
          --connection   -c                   output of current IPVS connections
          --timeout                           output of timeout (tcp tcpfin udp)
          --daemon                            output of daemon information
          --stats                             output of statistics information
          --rate                              output of rate information
          --exact                             expand numbers (display exact values)
          --thresholds                        output of thresholds information
          --persistent-conn                   output of persistent connection info
          --tun-info                          output of tunnel information
          --nosort                            disable sorting output of service/server entries
          --sort                              does nothing, for backwards compatibility
          --ops          -o                   one-packet scheduling
          --numeric      -n                   numeric output of addresses and ports
          --sched-flags  -b flags             scheduler flags (comma-separated)
          --json                              listings as JSON, for automation
          --drops                             output of frames lvsd dropped, by reason
          --health                            output of health checks (keepalived.conf's checkers)
          --synproxy     -j enable|disable    SYN proxy: SYN cookies at lvsd (with -A|E)
          --proxy-protocol v1|v2|v1-insecure|v2-insecure|disable
                                              PROXY protocol header to the real servers (with -A|E)
          --socket       path                 lvsd's control socket (default \(defaultSocket), or $LVSADM_SOCKET)

        """
    }
}
