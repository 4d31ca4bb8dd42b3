import LVSConfiguration
import LVSCore
import LVSPacket
import LVSSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What lvsadm asks lvsd. One request, one response, on one connection.
public enum ControlRequest: Sendable, Hashable, Codable {
    /// Everything the listings need; with `connections` also the connection table.
    case snapshot(connections: Bool)
    /// Applied all or nothing.
    case apply([TableOperation])
    /// Zeroes one service's counters, or all of them.
    case zero(ServiceKey?)
    /// Re-reads lvsd's configuration files (as SIGHUP does).
    case reload
    /// Takes the packets traced since the last call and arms tracing for up
    /// to `limit` more (0 disarms); unpolled for 3 s, tracing disarms itself.
    case trace(filter: ServiceKey?, limit: Int)
    case startDaemon(SyncDaemonConfiguration)
    case stopDaemon(SyncDaemonConfiguration.Role)
    /// A new lvsd taking over (`lvsd --takeover`): this one stops reading
    /// frames, writes every connection to its state file and lets go of it;
    /// then `finish` (it exits without resigning anything) or `abort` (it
    /// serves again, as it does by itself if neither comes within 10 s).
    case handover(HandoverStep)
}

public enum HandoverStep: String, Sendable, Hashable, Codable {
    case prepare, finish, abort
}

/// What the lvsd handing over tells its successor.
public struct HandoverState: Sendable, Hashable, Codable {
    public var pid: Int32
    /// Where it wrote every connection.
    public var stateFile: String
    /// It forwarded every frame the kernel received by then (ns of CLOCK_REALTIME).
    public var forwardedUntil: UInt64
    /// VRRP instances it is master of: the successor starts them as master.
    public var vrrpMasters: [String]
    /// Its counters, for the successor to go on from.
    public var counters: [CarriedCounters]
    /// Real servers its checkers found down (by checker id), with why: they start down.
    public var healthDown: [String: String]
    /// Its sync daemons: the successor starts them (`--start-daemon`'s survive too).
    public var syncDaemons: [SyncDaemonConfiguration]
    /// The process running its BGP speaker: the successor keeps it, sessions and routes untouched.
    public var speaker: Int32?
    /// The real servers its passive check holds; nil from an lvsd that did not carry them.
    public var passive: [CarriedPassiveRecord]?

    public init(
        pid: Int32, stateFile: String, forwardedUntil: UInt64, vrrpMasters: [String], counters: [CarriedCounters], healthDown: [String: String],
        syncDaemons: [SyncDaemonConfiguration],
        speaker: Int32?, passive: [CarriedPassiveRecord]? = nil
    ) {
        self.pid = pid
        self.stateFile = stateFile
        self.forwardedUntil = forwardedUntil
        self.vrrpMasters = vrrpMasters
        self.counters = counters
        self.healthDown = healthDown
        self.syncDaemons = syncDaemons
        self.speaker = speaker
        self.passive = passive
    }
}

/// A real server the passive check holds: weight 0 until `until`, or on
/// probation (nil) until its next SYN-ACK. Times are milliseconds of the
/// monotonic clock, which every process on the machine shares.
public struct CarriedPassiveRecord: Sendable, Hashable, Codable {
    public var service: ServiceKey
    public var address: IPAddress
    public var port: UInt16
    /// The weight it had, given back when the inhibition ends.
    public var weight: Int32
    public var until: UInt64?
    /// The inhibition's length, doubled on a relapse.
    public var inhibit: UInt64
    public var since: UInt64

    public init(service: ServiceKey, address: IPAddress, port: UInt16, weight: Int32, until: UInt64?, inhibit: UInt64, since: UInt64) {
        self.service = service
        self.address = address
        self.port = port
        self.weight = weight
        self.until = until
        self.inhibit = inhibit
        self.since = since
    }
}

/// The totals (no service), a service's counters, or a real server's.
public struct CarriedCounters: Sendable, Hashable, Codable {
    public var service: ServiceKey?
    public var server: IPAddress?
    public var port: UInt16
    public var counters: Counters
    /// Their rate estimator, which goes on from the same counts.
    public var estimator: RateEstimator?

    public init(service: ServiceKey?, server: IPAddress? = nil, port: UInt16 = 0, counters: Counters, estimator: RateEstimator? = nil) {
        self.service = service
        self.server = server
        self.port = port
        self.counters = counters
        self.estimator = estimator
    }
}

public enum ControlResponse: Sendable, Codable {
    case snapshot(TableSnapshot)
    case done
    case failed(TableError)
    case trace([TraceEntry])
    case handover(HandoverState)
}

/// The wire format: a 4-byte big-endian length, then a JSON object
/// `{"version": 1, "body": …}`. A peer speaking another version gets an
/// error naming the versions this side speaks.
public enum ControlProtocol {
    public static let version = 1
    /// Requests are small; listings of big connection tables are not.
    public static let maxRequest = 1 << 20
    public static let maxResponse = 256 << 20

    struct Envelope<Body: Codable>: Codable {
        var version: Int
        var body: Body
    }

    struct VersionOnly: Codable { var version: Int }

    /// The body length a 4-byte header announces.
    public static func length(of header: [UInt8]) -> Int {
        Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
    }

    public static func encode<Body: Codable>(_ body: Body) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(Envelope(version: version, body: body))
        let n = UInt32(json.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + Array(json)
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case unsupportedVersion(Int)
        case malformed(String)
        public var description: String {
            switch self {
            case .unsupportedVersion(let v): "unsupported control protocol version \(v) (this side speaks \(ControlProtocol.version))"
            case .malformed(let why): "malformed control message: \(why)"
            }
        }
    }

    /// Decodes a message body (without its length prefix).
    public static func decode<Body: Codable>(_ type: Body.Type, from bytes: [UInt8]) throws(DecodeError) -> Body {
        let data = Data(bytes)
        let decoder = JSONDecoder()
        let v: VersionOnly
        do { v = try decoder.decode(VersionOnly.self, from: data) } catch { throw .malformed("\(error)") }
        guard v.version == version else { throw .unsupportedVersion(v.version) }
        do { return try decoder.decode(Envelope<Body>.self, from: data).body } catch { throw .malformed("\(error)") }
    }

    /// Pretty JSON for `--json`.
    public static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
