import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSPacket
import LVSSystem

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `lvsadm trace`, an addition: what lvsd does to live packets.
extension Admin {
    struct TraceOptions {
        var filter: ServiceKey? = nil
        var count: Int? = nil
        var waitSeconds: Double? = nil
        var json = false
        var socket: String? = nil
    }

    static func parseTrace(_ arguments: [String]) -> Result<TraceOptions, UsageError> {
        var o = TraceOptions()
        var k = 0
        func value(_ name: String) -> Result<String, UsageError> {
            k += 1
            guard k < arguments.count else { return .failure(UsageError("\(name) needs a value")) }
            return .success(arguments[k])
        }
        while k < arguments.count {
            var arg = arguments[k]
            var inline: String? = nil
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                inline = String(arg[arg.index(after: eq)...])
                arg = String(arg[..<eq])
            }
            func next() -> Result<String, UsageError> { inline.map { .success($0) } ?? value(arg) }
            switch arg {
            case "-t", "--tcp-service", "-u", "--udp-service", "--sctp-service":
                guard case .success(let text) = next() else { return .failure(UsageError("\(arg) needs a service-address")) }
                let proto: TransportProtocol =
                    switch arg {
                    case "-u", "--udp-service": .udp
                    case "--sctp-service": .sctp
                    default: .tcp
                    }
                guard let (address, port) = AdminCommandLine.parseAddressPort(text, proto: proto) else {
                    return .failure(UsageError("illegal virtual server address[:port] specified"))
                }
                o.filter = .address(proto, address, port ?? 0)
            case "-f", "--fwmark-service":
                guard case .success(let text) = next(), let mark = UInt32(text), mark > 0 else {
                    return .failure(UsageError("illegal virtual server firewall-mark specified"))
                }
                o.filter = .firewallMark(mark, ipv6: arguments.contains("-6") || arguments.contains("--ipv6"))
            case "-6", "--ipv6":
                break
            case "--count":
                guard case .success(let text) = next(), let n = Int(text), n > 0 else { return .failure(UsageError("--count needs a positive number")) }
                o.count = n
            case "--wait":
                guard case .success(let text) = next(), let n = Double(text), n > 0 else {
                    return .failure(UsageError("--wait needs a positive number of seconds"))
                }
                o.waitSeconds = n
            case "--json":
                o.json = true
            case "--socket":
                guard case .success(let text) = next() else { return .failure(UsageError("--socket needs a path")) }
                o.socket = text
            case "-n", "--numeric":
                break
            default:
                return .failure(UsageError("trace: unknown option \(arg)"))
            }
            k += 1
        }
        return .success(o)
    }

    /// Polls lvsd every 100 ms, printing each traced packet as it comes,
    /// until `--count` packets or `--wait` seconds; then disarms the trace.
    func runTrace(_ arguments: [String]) -> Int32 {
        let o: TraceOptions
        switch Self.parseTrace(arguments) {
        case .success(let v): o = v
        case .failure(let e):
            writeError("\(program) trace: \(e.message)\nUsage: \(program) trace [-t|-u service-address | -f fwmark] [--count N] [--wait seconds] [--json]\n")
            return 2
        }
        let socket = socketPath(o.socket)
        var remaining = o.count ?? Int.max
        let deadline = o.waitSeconds.map { MonotonicClock.milliseconds() + UInt64($0 * 1000) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return reportingFailures(socket: socket) {
            defer { _ = try? exchange(.trace(filter: o.filter, limit: 0), socket) }
            while remaining > 0 {
                switch try exchange(.trace(filter: o.filter, limit: min(remaining, TraceSession.maxRecords)), socket) {
                case .trace(let entries):
                    for e in entries.prefix(remaining) {
                        if o.json, let data = try? encoder.encode(e) {
                            write(String(decoding: data, as: UTF8.self) + "\n")
                        } else {
                            write(TraceFormatter.format(e))
                        }
                    }
                    remaining -= min(remaining, entries.count)
                case .failed(let e):
                    writeError(e.message + "\n")
                    return 255
                default:
                    writeError("\(program): lvsd does not trace\n")
                    return 1
                }
                if let deadline, MonotonicClock.milliseconds() >= deadline { break }
                if remaining > 0 { usleep(100_000) }
            }
            return 0
        }
    }
}
