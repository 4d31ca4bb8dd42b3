import LVSPacket

/// A key with a cheap multiplicative hash: the data path's lookups then
/// cost a few instructions instead of a SipHash round (Swift's `Hasher`
/// is keyed against flooding; these keys come from configuration and
/// routing, not from the wire).
protocol FlatHashable: Equatable, Sendable {
    var flatHash: UInt64 { get }
}

/// Open addressing with linear probing, sized at least twice the entries.
/// Insertions and removals happen on configuration changes; removal
/// rebuilds.
struct FlatMap<Key: FlatHashable, Value: Sendable>: Sendable {
    private var slots: [(key: Key, value: Value)?]
    private var mask: Int
    private(set) var count = 0

    init() {
        slots = [(key: Key, value: Value)?](repeating: nil, count: 8)
        mask = 7
    }

    private func index(_ key: Key) -> Int {
        var h = key.flatHash &* 0x9E37_79B9_7F4A_7C15
        h ^= h &>> 31
        return Int(truncatingIfNeeded: h) & mask
    }

    subscript(key: Key) -> Value? {
        get {
            var i = index(key)
            while let entry = slots[i] {
                if entry.key == key { return entry.value }
                i = (i &+ 1) & mask
            }
            return nil
        }
        set {
            guard let newValue else {
                remove(key)
                return
            }
            if (count + 1) * 2 > slots.count { grow() }
            var i = index(key)
            while let entry = slots[i] {
                if entry.key == key {
                    slots[i] = (key, newValue)
                    return
                }
                i = (i &+ 1) & mask
            }
            slots[i] = (key, newValue)
            count += 1
        }
    }

    private mutating func grow() {
        let old = slots
        slots = [(key: Key, value: Value)?](repeating: nil, count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for case let entry? in old { self[entry.key] = entry.value }
    }

    private mutating func remove(_ key: Key) {
        guard self[key] != nil else { return }
        let old = slots
        slots = [(key: Key, value: Value)?](repeating: nil, count: old.count)
        count = 0
        for case let entry? in old where entry.key != key { self[entry.key] = entry.value }
    }
}

extension IPAddress: FlatHashable {
    var flatHash: UInt64 {
        switch self {
        case .v4(let a): a.folded
        case .v6(let a): a.folded ^ 0x5555_5555
        }
    }
}

extension ServiceLookupKey: FlatHashable {
    var flatHash: UInt64 { address.folded ^ (UInt64(port) &<< 40 | UInt64(proto) &<< 56) }
}
