/// An IP address family's address as a fixed-size value, so that connection
/// entries can be plain structs specialised per family (an IPv4 entry stays
/// small; see `ConnectionTable`).
public protocol IPAddressProtocol: BitwiseCopyable, Hashable, Sendable, Comparable, CustomStringConvertible {
    static var byteCount: Int { get }
    static var zero: Self { get }
    init(_ span: Span<UInt8>, at offset: Int)
    func store(_ span: inout MutableSpan<UInt8>, at offset: Int)
    /// The same over a raw window (the forwarding rewrites').
    init(_ raw: borrowing MutableRawSpan, at offset: Int)
    func store(_ raw: inout MutableRawSpan, at offset: Int)
    /// The address folded to 64 bits, for hashing.
    var folded: UInt64 { get }
    /// Keeps the first `bits` bits.
    func masked(prefixLength bits: Int) -> Self
    var ipAddress: IPAddress { get }
    /// Sum of the address's 16-bit words, for checksums.
    var wordSum: UInt64 { get }
    /// Sum of its 32-bit words, and of their complements (removing it from a
    /// checksum), unfolded: the forwarding rewrites' incremental update.
    var wordSum32: UInt64 { get }
    var complementSum: UInt64 { get }
    /// The kernel's `addr_fold` in host order: the IPv4 address, or the XOR
    /// of an IPv6 address's four 32-bit words.
    var kernelFold: UInt32 { get }
}

public struct IPv4Address: IPAddressProtocol {
    public var value: UInt32
    @inlinable public init(_ value: UInt32) { self.value = value }
    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    @inlinable public static var byteCount: Int { 4 }
    @inlinable public static var zero: IPv4Address { IPv4Address(0) }
    @inlinable @inline(__always)
    public init(_ span: Span<UInt8>, at offset: Int) { value = span.be32(at: offset) }
    @inlinable @inline(__always)
    public func store(_ span: inout MutableSpan<UInt8>, at offset: Int) { span.setBE32(value, at: offset) }
    @inlinable @inline(__always)
    public init(_ raw: borrowing MutableRawSpan, at offset: Int) { value = raw.be32(at: offset) }
    @inlinable @inline(__always)
    public func store(_ raw: inout MutableRawSpan, at offset: Int) { raw.setBE32(value, at: offset) }
    @inlinable public var folded: UInt64 { UInt64(value) }
    @inlinable public func masked(prefixLength bits: Int) -> IPv4Address {
        bits <= 0 ? .zero : bits >= 32 ? self : IPv4Address(value & ~(UInt32.max >> UInt32(bits)))
    }
    @inlinable public var ipAddress: IPAddress { .v4(self) }
    @inlinable public var kernelFold: UInt32 { value }
    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    public init?(_ text: some StringProtocol) {
        var parts: [UInt32] = []
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, let n = UInt32(part), n <= 255 else { return nil }
            parts.append(n)
        }
        guard parts.count == 4 else { return nil }
        value = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3]
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 255).\(value >> 8 & 255).\(value & 255)"
    }
}

public struct IPv6Address: IPAddressProtocol {
    public var high: UInt64
    public var low: UInt64
    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }
    @inlinable public static var byteCount: Int { 16 }
    @inlinable public static var zero: IPv6Address { IPv6Address(high: 0, low: 0) }
    @inlinable @inline(__always)
    public init(_ span: Span<UInt8>, at offset: Int) {
        high = span.be64(at: offset)
        low = span.be64(at: offset &+ 8)
    }
    @inlinable @inline(__always)
    public func store(_ span: inout MutableSpan<UInt8>, at offset: Int) {
        span.setBE64(high, at: offset)
        span.setBE64(low, at: offset &+ 8)
    }
    @inlinable @inline(__always)
    public init(_ raw: borrowing MutableRawSpan, at offset: Int) {
        high = raw.be64(at: offset)
        low = raw.be64(at: offset &+ 8)
    }
    @inlinable @inline(__always)
    public func store(_ raw: inout MutableRawSpan, at offset: Int) {
        raw.setBE64(high, at: offset)
        raw.setBE64(low, at: offset &+ 8)
    }
    @inlinable public var folded: UInt64 { high ^ (low &* 0x9E37_79B9_7F4A_7C15) }
    @inlinable public func masked(prefixLength bits: Int) -> IPv6Address {
        if bits <= 0 { return .zero }
        if bits >= 128 { return self }
        if bits <= 64 { return IPv6Address(high: bits == 64 ? high : high & ~(UInt64.max >> UInt64(bits)), low: 0) }
        return IPv6Address(high: high, low: low & ~(UInt64.max >> UInt64(bits - 64)))
    }
    @inlinable public var ipAddress: IPAddress { .v6(self) }
    @inlinable public var kernelFold: UInt32 {
        UInt32(truncatingIfNeeded: high &>> 32) ^ UInt32(truncatingIfNeeded: high)
            ^ UInt32(truncatingIfNeeded: low &>> 32) ^ UInt32(truncatingIfNeeded: low)
    }
    public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// The 16-bit groups, most significant first.
    public var groups: [UInt16] {
        (0..<8).map { i in UInt16(truncatingIfNeeded: (i < 4 ? high : low) >> UInt64(48 - 16 * (i % 4))) }
    }

    public init?(_ text: some StringProtocol) {
        let s = String(text)
        var head: [UInt16] = []
        var tail: [UInt16] = []
        let halves: [String]
        if let r = s.firstRange(of: "::") {
            halves = [String(s[..<r.lowerBound]), String(s[r.upperBound...])]
        } else {
            halves = [s]
        }
        guard !(halves.count == 2 && halves[1].contains("::")) else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                if i == items.count - 1, item.contains("."), let v4 = IPv4Address(item) {
                    out.append(UInt16(v4.value >> 16))
                    out.append(UInt16(v4.value & 0xFFFF))
                    continue
                }
                guard !item.isEmpty, item.count <= 4, let g = UInt16(item, radix: 16) else { return nil }
                out.append(g)
            }
            return out
        }
        guard let h = groups(halves[0]) else { return nil }
        head = h
        if halves.count == 2 {
            guard let t = groups(halves[1]), head.count + t.count <= 7 else { return nil }
            tail = t
        } else if head.count != 8 {
            return nil
        }
        let all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(all[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(all[i]) }
        high = hi
        low = lo
    }

    /// RFC 5952 text: lower case, longest run of two or more zero groups as "::".
    public var description: String {
        let g = groups
        var bestStart = -1
        var bestLen = 0
        var i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 {
                    bestStart = i
                    bestLen = j - i
                }
                i = j
            } else {
                i += 1
            }
        }
        if bestStart < 0 { return g.map { String($0, radix: 16) }.joined(separator: ":") }
        let left = g[0..<bestStart].map { String($0, radix: 16) }.joined(separator: ":")
        let right = g[(bestStart + bestLen)...].map { String($0, radix: 16) }.joined(separator: ":")
        return left + "::" + right
    }
}

/// Either family, for configuration and display; the data path uses the
/// concrete types.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public init?(_ text: some StringProtocol) {
        if let a = IPv4Address(text) { self = .v4(a) } else if let a = IPv6Address(text) { self = .v6(a) } else { return nil }
    }

    public var isIPv6: Bool { if case .v6 = self { true } else { false } }

    /// The address in network order: 4 or 16 bytes.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): (0..<4).map { k in UInt8(truncatingIfNeeded: a.value >> (24 - 8 * UInt32(k))) }
        case .v6: mappedBytes
        }
    }

    /// 224.0.0.0/4 or ff00::/8.
    public var isMulticast: Bool {
        switch self {
        case .v4(let a): a.value >> 28 == 0xE
        case .v6(let a): a.high >> 56 == 0xFF
        }
    }

    /// The 16 bytes in network order, IPv4 as ::ffff:a.b.c.d (the XDP maps' key).
    public var mappedBytes: [UInt8] {
        let (high, low): (UInt64, UInt64) =
            switch self {
            case .v4(let a): (0, 0xFFFF_0000_0000 | UInt64(a.value))
            case .v6(let a): (a.high, a.low)
            }
        return (0..<16).map { k in UInt8(truncatingIfNeeded: (k < 8 ? high : low) >> (56 - 8 * UInt64(k % 8))) }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): x < y
        case (.v6(let x), .v6(let y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }
}

public struct MACAddress: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// The six octets in the low 48 bits, first octet most significant.
    public var value: UInt64
    @inlinable public init(_ value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }
    public static let broadcast = MACAddress(0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(0)
    @inlinable @inline(__always)
    public init(_ span: Span<UInt8>, at offset: Int) {
        value = UInt64(span.be16(at: offset)) << 32 | UInt64(span.be32(at: offset &+ 2))
    }
    @inlinable @inline(__always)
    public func store(_ span: inout MutableSpan<UInt8>, at offset: Int) {
        span.setBE16(UInt16(truncatingIfNeeded: value >> 32), at: offset)
        span.setBE32(UInt32(truncatingIfNeeded: value), at: offset &+ 2)
    }
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ":")
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for p in parts {
            guard p.count <= 2, let b = UInt8(p, radix: 16) else { return nil }
            v = v << 8 | UInt64(b)
        }
        value = v
    }
    public var description: String {
        (0..<6).map { i in
            let b = UInt8(truncatingIfNeeded: value >> UInt64(40 - 8 * i))
            return (b < 16 ? "0" : "") + String(b, radix: 16)
        }.joined(separator: ":")
    }
}
