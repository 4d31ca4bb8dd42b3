import LVSPacket

/// FULLNAT source ports, DPVS's sa_pool: per local address, ports are split
/// into sub-pools by a hash of the real server, so the same (LIP, port) can
/// serve different real servers and allocation is a pop, never a search.
/// With several workers each owns the ports whose low bits equal its index,
/// so replies can be steered back to it by port.
public struct FullNATPortPool<A: IPAddressProtocol>: Sendable {
    public static var subPools: Int { 16 }
    public let addresses: [A]
    /// [address][sub-pool] → free ports.
    var pools: [[[UInt16]]]
    var next = 0
    public private(set) var misses: UInt64 = 0

    public init(addresses: [A], ports: ClosedRange<UInt16> = 1025...65535, worker: Int = 0, workers: Int = 1) {
        self.addresses = addresses
        var mask = 1
        while mask < workers { mask <<= 1 }
        mask -= 1
        let owned = ports.filter { Int($0) & mask == worker }
        pools = addresses.map { _ in (0..<Self.subPools).map { _ in Array(owned.reversed()) } }
    }

    static func subPool(real: A, port: UInt16) -> Int {
        Int(truncatingIfNeeded: ((real.folded ^ UInt64(port)) &* 0x9E37_79B9_7F4A_7C15) &>> 60) & (subPools - 1)
    }

    /// A (local address, port) towards `real:port`; local addresses are used
    /// round-robin. nil when every pool for that server is empty.
    public mutating func allocate(real: A, port: UInt16) -> (A, UInt16)? {
        guard !addresses.isEmpty else { misses &+= 1; return nil }
        let sub = Self.subPool(real: real, port: port)
        for k in 0..<addresses.count {
            let a = (next &+ k) % addresses.count
            if let p = pools[a][sub].popLast() {
                next = (a &+ 1) % addresses.count
                return (addresses[a], p)
            }
        }
        misses &+= 1
        return nil
    }

    public mutating func release(local: A, port: UInt16, real: A, realPort: UInt16) {
        guard let a = addresses.firstIndex(of: local) else { return }
        pools[a][Self.subPool(real: real, port: realPort)].append(port)
    }

    public func available(real: A, port: UInt16) -> Int {
        let sub = Self.subPool(real: real, port: port)
        return pools.reduce(0) { $0 + $1[sub].count }
    }
}
