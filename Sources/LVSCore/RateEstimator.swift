/// The kernel's rate estimator (`ip_vs_est.c`): every 2 s, an EWMA with
/// weight 1/4 of the per-second rates, kept scaled (×2^10 for connections
/// and packets, ×2^5 for bytes).
public struct RateEstimator: Sendable, Hashable, Codable {
    public static let periodMilliseconds: UInt64 = 2000
    var last = Counters()
    var cps: Int64 = 0, inPPS: Int64 = 0, outPPS: Int64 = 0, inBPS: Int64 = 0, outBPS: Int64 = 0

    public init() {}

    /// Feeds the counters read at the end of a 2 s period.
    public mutating func update(_ now: Counters) {
        func step(_ avg: inout Int64, _ delta: UInt64, shift: Int) {
            let rate = Int64(truncatingIfNeeded: delta) << shift
            avg += (rate - avg) >> 2
        }
        step(&cps, now.connections &- last.connections, shift: 9)
        step(&inPPS, now.inPackets &- last.inPackets, shift: 9)
        step(&outPPS, now.outPackets &- last.outPackets, shift: 9)
        step(&inBPS, now.inBytes &- last.inBytes, shift: 4)
        step(&outBPS, now.outBytes &- last.outBytes, shift: 4)
        last = now
    }

    /// Restarts from `counters` (`-Z`).
    public mutating func reset(_ counters: Counters = Counters()) {
        self = RateEstimator()
        last = counters
    }

    public struct Rates: Sendable, Hashable, Codable {
        public var connectionsPerSecond: UInt64 = 0
        public var inPacketsPerSecond: UInt64 = 0
        public var outPacketsPerSecond: UInt64 = 0
        public var inBytesPerSecond: UInt64 = 0
        public var outBytesPerSecond: UInt64 = 0
        public init() {}
        init(connectionsPerSecond: UInt64, inPacketsPerSecond: UInt64, outPacketsPerSecond: UInt64, inBytesPerSecond: UInt64, outBytesPerSecond: UInt64) {
            self.connectionsPerSecond = connectionsPerSecond
            self.inPacketsPerSecond = inPacketsPerSecond
            self.outPacketsPerSecond = outPacketsPerSecond
            self.inBytesPerSecond = inBytesPerSecond
            self.outBytesPerSecond = outBytesPerSecond
        }
    }

    public var rates: Rates {
        Rates(
            connectionsPerSecond: UInt64(max(0, (cps + 0x1FF) >> 10)),
            inPacketsPerSecond: UInt64(max(0, (inPPS + 0x1FF) >> 10)),
            outPacketsPerSecond: UInt64(max(0, (outPPS + 0x1FF) >> 10)),
            inBytesPerSecond: UInt64(max(0, (inBPS + 0xF) >> 5)),
            outBytesPerSecond: UInt64(max(0, (outBPS + 0xF) >> 5)))
    }
}
