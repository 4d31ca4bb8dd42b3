// Big-endian field access over bounds-checked spans: one checked load or
// store and a byte swap per field (byte-by-byte access cost a bounds check
// per byte, which the optimizer did not merge).

extension Span where Element == UInt8 {
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 {
        // `unsafe` only because a load could produce an invalid value of some
        // types; integers have none, and the offset is bounds-checked.
        UInt16(bigEndian: unsafe bytes.unsafeLoadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    public func be32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: unsafe bytes.unsafeLoadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    public func be64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: unsafe bytes.unsafeLoadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}

extension MutableSpan where Element == UInt8 {
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: unsafe bytes.unsafeLoadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    public func be32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: unsafe bytes.unsafeLoadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    public mutating func setBE16(_ value: UInt16, at offset: Int) {
        var raw = unsafe mutableBytes  // bytes into bytes: no element can be broken
        raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    public mutating func setBE32(_ value: UInt32, at offset: Int) {
        var raw = unsafe mutableBytes  // bytes into bytes: no element can be broken
        raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public mutating func setBE64(_ value: UInt64, at offset: Int) {
        var raw = unsafe mutableBytes  // bytes into bytes: no element can be broken
        raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// Moves `count` bytes from `source` to `destination` inside this span;
    /// the ranges may overlap.
    @inlinable
    public mutating func moveBytes(from source: Int, to destination: Int, count: Int) {
        precondition(count >= 0 && source >= 0 && destination >= 0)
        precondition(source &+ count <= self.count && destination &+ count <= self.count)
        if destination < source {
            var i = 0
            while i < count {
                self[destination &+ i] = self[source &+ i]
                i &+= 1
            }
        } else if destination > source {
            var i = count
            while i > 0 {
                i &-= 1
                self[destination &+ i] = self[source &+ i]
            }
        }
    }

    @inlinable
    public mutating func fill(_ value: UInt8, from offset: Int, count: Int) {
        var i = 0
        while i < count {
            self[offset &+ i] = value
            i &+= 1
        }
    }
}

// The same over a raw window: with a window of constant size and constant
// offsets, the optimizer proves every access in bounds and drops the checks.
extension MutableRawSpan {
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: unsafe unsafeLoadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    public func be32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: unsafe unsafeLoadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    public func be64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: unsafe unsafeLoadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// Four bytes in the machine's order, for ones-complement sums (which
    /// do not depend on byte order).
    @inlinable @inline(__always)
    public func word32(at offset: Int) -> UInt32 {
        unsafe unsafeLoadUnaligned(fromByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public func byte(at offset: Int) -> UInt8 {
        unsafe unsafeLoad(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    public mutating func setByte(_ value: UInt8, at offset: Int) {
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    public mutating func setBE16(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    public mutating func setBE32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public mutating func setBE64(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }
}
