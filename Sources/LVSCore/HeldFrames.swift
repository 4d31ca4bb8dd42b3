import LVSPacket

/// Frames the director keeps for a moment: a SYN-proxied client's first data,
/// which arrives before the real server has answered the director's SYN.
/// A fixed pool, allocated once; released into the batch that completes the
/// handshake (or a later one), given up after `maxAge`.
struct HeldFrames: Sendable {
    static let slots = 128
    static let slotSize = 2048
    static let maxAgeMilliseconds: UInt64 = 3000

    var bytes: [UInt8]
    var lengths: [Int]
    var owners: [Int]
    var ipv6: [Bool]
    var interfaces: [UInt16]
    var since: [UInt64]
    var ready: [Bool]
    /// Slots in use, and how many of them may go.
    var used = 0
    var readyCount = 0

    init() {
        bytes = [UInt8](repeating: 0, count: Self.slots * Self.slotSize)
        lengths = [Int](repeating: 0, count: Self.slots)
        owners = [Int](repeating: -1, count: Self.slots)
        ipv6 = [Bool](repeating: false, count: Self.slots)
        interfaces = [UInt16](repeating: 0, count: Self.slots)
        since = [UInt64](repeating: 0, count: Self.slots)
        ready = [Bool](repeating: false, count: Self.slots)
    }

    /// Copies the frame in; false when the pool is full or the frame too big.
    mutating func hold(_ b: borrowing MutableSpan<UInt8>, _ f: FrameBounds, connection: Int, ipv6 v6: Bool, interface: UInt16, now: UInt64) -> Bool {
        guard used < Self.slots, f.length > 0, f.length <= Self.slotSize, f.start >= 0, f.end <= b.count,
            let k = lengths.firstIndex(of: 0)
        else { return false }
        var out = bytes.mutableSpan
        let base = k &* Self.slotSize
        for n in 0..<f.length { out[base &+ n] = b[f.start &+ n] }
        lengths[k] = f.length
        owners[k] = connection
        ipv6[k] = v6
        interfaces[k] = interface
        since[k] = now
        ready[k] = false
        used &+= 1
        return true
    }

    /// Whether a frame of the connection waits here.
    func holds(connection: Int, ipv6 v6: Bool) -> Bool {
        guard used > 0 else { return false }
        for k in 0..<Self.slots where lengths[k] > 0 && owners[k] == connection && ipv6[k] == v6 { return true }
        return false
    }

    /// The connection's frames may go now.
    mutating func release(connection: Int, ipv6 v6: Bool) {
        guard used > 0 else { return }
        for k in 0..<Self.slots where lengths[k] > 0 && owners[k] == connection && ipv6[k] == v6 && !ready[k] {
            ready[k] = true
            readyCount &+= 1
        }
    }

    /// A slot ready to go, if any.
    func nextReady() -> Int? {
        guard readyCount > 0 else { return nil }
        return ready.firstIndex(of: true)
    }

    /// Writes slot `k`'s frame at `start` and frees the slot.
    mutating func take(_ k: Int, into b: inout MutableSpan<UInt8>, at start: Int) -> (length: Int, interface: UInt16)? {
        let length = lengths[k]
        defer { free(k) }
        guard start >= 0, start &+ length <= b.count else { return nil }
        let s = bytes.span
        let base = k &* Self.slotSize
        for n in 0..<length { b[start &+ n] = s[base &+ n] }
        return (length, interfaces[k])
    }

    mutating func free(_ k: Int) {
        guard lengths[k] > 0 else { return }
        if ready[k] { readyCount &-= 1 }
        lengths[k] = 0
        ready[k] = false
        owners[k] = -1
        used &-= 1
    }

    /// Frees what waited too long (the client sends it again).
    mutating func expire(now: UInt64) {
        guard used > 0 else { return }
        for k in 0..<Self.slots where lengths[k] > 0 && now &- since[k] > Self.maxAgeMilliseconds { free(k) }
    }
}
