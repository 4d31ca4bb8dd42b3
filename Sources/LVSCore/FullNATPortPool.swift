import LVSPacket

/// FULLNAT source ports, DPVS's sa_pool: per local address, ports are split
/// into sub-pools by a hash of the real server, so the same (LIP, port) can
/// serve different real servers and allocation is a pop, never a search.
/// With several workers each owns the ports whose low bits equal its index,
/// so replies can be steered back to it by port. Free ports queue first in,
/// first out: a port just released is the last one taken again, long after
/// the real server's TIME_WAIT for it has ended (a port reused at once meets
/// that TIME_WAIT, and the real server may refuse the new SYN).
public struct FullNATPortPool<A: IPAddressProtocol>: Sendable {
    public static var subPools: Int { 16 }
    public let addresses: [A]
    /// [address][sub-pool] → free ports.
    var pools: [[PortQueue]]
    var next = 0
    public private(set) var misses: UInt64 = 0

    public init(addresses: [A], ports: ClosedRange<UInt16> = 1025...65535, worker: Int = 0, workers: Int = 1) {
        self.addresses = addresses
        let mask = Self.workerBits(workers: workers)
        let owned = ports.filter { Int($0) & mask == worker }
        pools = addresses.map { _ in (0..<Self.subPools).map { _ in PortQueue(owned) } }
    }

    /// The low port bits that name a port's worker: enough for every worker.
    public static func workerBits(workers: Int) -> Int {
        var mask = 1
        while mask < workers { mask <<= 1 }
        return mask - 1
    }

    static func subPool(real: A, port: UInt16) -> Int {
        Int(truncatingIfNeeded: ((real.folded ^ UInt64(port)) &* 0x9E37_79B9_7F4A_7C15) &>> 60) & (subPools - 1)
    }

    /// A (local address, port) towards `real:port`; local addresses are used
    /// round-robin. nil when every pool for that server is empty.
    public mutating func allocate(real: A, port: UInt16) -> (A, UInt16)? {
        guard !addresses.isEmpty else {
            misses &+= 1
            return nil
        }
        let sub = Self.subPool(real: real, port: port)
        for k in 0..<addresses.count {
            let a = (next &+ k) % addresses.count
            if let p = pools[a][sub].pop() {
                next = (a &+ 1) % addresses.count
                return (addresses[a], p)
            }
        }
        misses &+= 1
        return nil
    }

    public mutating func release(local: A, port: UInt16, real: A, realPort: UInt16) {
        guard let a = addresses.firstIndex(of: local) else { return }
        pools[a][Self.subPool(real: real, port: realPort)].push(port)
    }

    /// Takes a given port out of the free ports (a synced connection holds it).
    mutating func reserve(local: A, port: UInt16, real: A, realPort: UInt16) {
        guard let a = addresses.firstIndex(of: local) else { return }
        pools[a][Self.subPool(real: real, port: realPort)].remove(port)
    }

    public func available(real: A, port: UInt16) -> Int {
        let sub = Self.subPool(real: real, port: port)
        return pools.reduce(0) { $0 + $1[sub].count }
    }
}

/// A fixed ring of free ports, oldest first.
struct PortQueue: Sendable {
    var ports: [UInt16]
    var head = 0
    var count: Int

    init(_ free: [UInt16]) {
        ports = free
        count = free.count
    }

    mutating func pop() -> UInt16? {
        guard count > 0 else { return nil }
        let p = ports[head]
        head = head &+ 1 == ports.count ? 0 : head &+ 1
        count &-= 1
        return p
    }

    /// A port beyond the ring's size (released twice) is ignored.
    mutating func push(_ port: UInt16) {
        guard count < ports.count else { return }
        var tail = head &+ count
        if tail >= ports.count { tail &-= ports.count }
        ports[tail] = port
        count &+= 1
    }

    /// Removes one free port wherever it is in the ring (a linear search:
    /// only synced connections ask for this).
    mutating func remove(_ port: UInt16) {
        for k in 0..<count {
            var i = head &+ k
            if i >= ports.count { i &-= ports.count }
            guard ports[i] == port else { continue }
            // The head port moves into the hole, then the head advances.
            ports[i] = ports[head]
            head = head &+ 1 == ports.count ? 0 : head &+ 1
            count &-= 1
            return
        }
    }
}
