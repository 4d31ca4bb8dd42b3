// Big-endian field access over bounds-checked spans. Each access is written
// byte by byte so that it stays safe; the optimizer merges the bytes into one
// load or store plus a byte swap.

extension Span where Element == UInt8 {
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) &<< 8 | UInt16(self[offset &+ 1])
    }

    @inlinable @inline(__always)
    public func be32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) &<< 24 | UInt32(self[offset &+ 1]) &<< 16
            | UInt32(self[offset &+ 2]) &<< 8 | UInt32(self[offset &+ 3])
    }

    @inlinable @inline(__always)
    public func be64(at offset: Int) -> UInt64 {
        UInt64(be32(at: offset)) &<< 32 | UInt64(be32(at: offset &+ 4))
    }
}

extension MutableSpan where Element == UInt8 {
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) &<< 8 | UInt16(self[offset &+ 1])
    }

    @inlinable @inline(__always)
    public func be32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) &<< 24 | UInt32(self[offset &+ 1]) &<< 16
            | UInt32(self[offset &+ 2]) &<< 8 | UInt32(self[offset &+ 3])
    }

    @inlinable @inline(__always)
    public mutating func setBE16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value &>> 8)
        self[offset &+ 1] = UInt8(truncatingIfNeeded: value)
    }

    @inlinable @inline(__always)
    public mutating func setBE32(_ value: UInt32, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value &>> 24)
        self[offset &+ 1] = UInt8(truncatingIfNeeded: value &>> 16)
        self[offset &+ 2] = UInt8(truncatingIfNeeded: value &>> 8)
        self[offset &+ 3] = UInt8(truncatingIfNeeded: value)
    }

    @inlinable @inline(__always)
    public mutating func setBE64(_ value: UInt64, at offset: Int) {
        setBE32(UInt32(truncatingIfNeeded: value &>> 32), at: offset)
        setBE32(UInt32(truncatingIfNeeded: value), at: offset &+ 4)
    }

    /// Moves `count` bytes from `source` to `destination` inside this span;
    /// the ranges may overlap.
    @inlinable
    public mutating func moveBytes(from source: Int, to destination: Int, count: Int) {
        precondition(count >= 0 && source >= 0 && destination >= 0)
        precondition(source &+ count <= self.count && destination &+ count <= self.count)
        if destination < source {
            var i = 0
            while i < count { self[destination &+ i] = self[source &+ i]; i &+= 1 }
        } else if destination > source {
            var i = count
            while i > 0 { i &-= 1; self[destination &+ i] = self[source &+ i] }
        }
    }

    @inlinable
    public mutating func fill(_ value: UInt8, from offset: Int, count: Int) {
        var i = 0
        while i < count { self[offset &+ i] = value; i &+= 1 }
    }
}
