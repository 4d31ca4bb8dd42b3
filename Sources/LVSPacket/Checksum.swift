/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
public enum InternetChecksum {
    /// Ones-complement sum of the bytes as big-endian 16-bit words, not yet folded.
    /// An odd final byte is padded with zero, as RFC 1071 says.
    @inlinable
    public static func sum(_ span: Span<UInt8>, from offset: Int, count: Int, initial: UInt64 = 0) -> UInt64 {
        precondition(offset >= 0 && count >= 0 && offset &+ count <= span.count)
        var acc = initial
        var i = offset
        let end = offset &+ count
        while i &+ 8 <= end {
            acc &+= UInt64(span.be32(at: i)) &+ UInt64(span.be32(at: i &+ 4))
            i &+= 8
        }
        while i &+ 2 <= end {
            acc &+= UInt64(span.be16(at: i))
            i &+= 2
        }
        if i < end { acc &+= UInt64(span[i]) &<< 8 }
        return acc
    }

    /// Folds a sum to 16 bits with end-around carry.
    @inlinable @inline(__always)
    public static func fold(_ sum: UInt64) -> UInt16 {
        // 64 to 32 bits twice (the second cannot carry), then 32 to 16 as
        // Linux's csum_fold: in x + (x rotated by 16) the high half is the
        // two halves' sum, its carry out of the low half added back.
        let s = (sum & 0xFFFF_FFFF) &+ (sum &>> 32)
        let x = UInt32(truncatingIfNeeded: s) &+ UInt32(truncatingIfNeeded: s &>> 32)
        return UInt16(truncatingIfNeeded: (x &+ (x &>> 16 | x &<< 16)) &>> 16)
    }

    /// The checksum field value for a sum: its complement.
    @inlinable @inline(__always)
    public static func finish(_ sum: UInt64) -> UInt16 { ~fold(sum) }

    /// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), where m and m' are the
    /// (unfolded) word sums of the old and new field values.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, removing old: UInt64, adding new: UInt64) -> UInt16 {
        let s = UInt64(~checksum) &+ UInt64(~fold(old)) &+ new
        return ~fold(s)
    }

    /// Pseudo-header sum for TCP/UDP over IPv4 or IPv6.
    @inlinable
    public static func pseudoHeaderSum<A: IPAddressProtocol>(source: A, destination: A, protocol proto: UInt8, length: Int) -> UInt64 {
        source.wordSum &+ destination.wordSum &+ UInt64(proto) &+ UInt64(length)
    }
}

@inlinable @inline(__always)
func _words(_ v: UInt64) -> UInt64 {
    (v &>> 48) &+ ((v &>> 32) & 0xFFFF) &+ ((v &>> 16) & 0xFFFF) &+ (v & 0xFFFF)
}

extension IPv4Address {
    /// Sum of the address's 16-bit words, for checksums.
    @inlinable @inline(__always)
    public var wordSum: UInt64 { UInt64(value &>> 16) &+ UInt64(value & 0xFFFF) }
    /// The address's ones-complement negative, unfolded: what removing it
    /// from a checksum adds (its 32-bit words, each complemented).
    @inlinable @inline(__always)
    public var complementSum: UInt64 { UInt64(~value) }
    /// Its 32-bit words, summed unfolded (folding gives the 16-bit words' sum).
    @inlinable @inline(__always)
    public var wordSum32: UInt64 { UInt64(value) }
}

extension IPv6Address {
    @inlinable @inline(__always)
    public var wordSum: UInt64 { _words(high) &+ _words(low) }
    @inlinable @inline(__always)
    public var complementSum: UInt64 {
        UInt64(~UInt32(truncatingIfNeeded: high &>> 32)) &+ UInt64(~UInt32(truncatingIfNeeded: high))
            &+ UInt64(~UInt32(truncatingIfNeeded: low &>> 32)) &+ UInt64(~UInt32(truncatingIfNeeded: low))
    }
    @inlinable @inline(__always)
    public var wordSum32: UInt64 { (high &>> 32) &+ (high & 0xFFFF_FFFF) &+ (low &>> 32) &+ (low & 0xFFFF_FFFF) }
}
