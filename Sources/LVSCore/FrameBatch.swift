import LVSPacket

public struct FrameDescriptor: Sendable {
    public var bounds: FrameBounds
    public var interface: UInt16
    public var verdict: Verdict
}

/// A batch of frames in one preallocated arena of fixed-size slots, each with
/// headroom for encapsulation and TOA. The I/O backend fills it, `Director`
/// rewrites it in place. This is the one place the core touches raw memory.
/// A class: it owns its arena, and one batch is one identity (a noncopyable
/// struct holding it was miscompiled by Swift 6.3 in places).
@safe
public final class FrameBatch {
    let storage: UnsafeMutableRawBufferPointer
    public let slotSize: Int
    public let headroom: Int
    public let capacity: Int
    public var descriptors: [FrameDescriptor]
    public var count = 0

    public init(capacity: Int, slotSize: Int = 2048, headroom: Int = 128) {
        precondition(capacity > 0 && slotSize > headroom)
        self.capacity = capacity
        self.slotSize = slotSize
        self.headroom = headroom
        unsafe storage = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity * slotSize, alignment: 64)
        unsafe storage.initializeMemory(as: UInt8.self, repeating: 0)
        descriptors = [FrameDescriptor](
            repeating: FrameDescriptor(bounds: FrameBounds(start: headroom, length: 0), interface: 0, verdict: .pass), count: capacity)
    }

    deinit { unsafe storage.deallocate() }

    /// Runs `body` over the whole slot `i` (headroom included) as a
    /// bounds-checked span.
    public func withSlot<R>(_ i: Int, _ body: (inout MutableSpan<UInt8>) -> R) -> R {
        precondition(i >= 0 && i < capacity)
        let base = unsafe storage.baseAddress!.advanced(by: i * slotSize).assumingMemoryBound(to: UInt8.self)
        let buffer = unsafe UnsafeMutableBufferPointer(start: base, count: slotSize)
        var span = unsafe buffer.mutableSpan
        return body(&span)
    }

    /// Runs `body` over every frame with its slot and descriptor: one access
    /// to the class's storage for the whole batch, not one per frame.
    public func forEach(_ body: (inout MutableSpan<UInt8>, inout FrameDescriptor) -> Void) {
        let size = slotSize
        withFrames { arena, ds in
            var i = 0
            while i < ds.count {
                var slot = arena._mutatingExtracting(i &* size..<(i &+ 1) &* size)
                body(&slot, &ds[i])
                i &+= 1
            }
        }
    }

    /// Runs `body` over the whole arena (slot `i` at `i * slotSize`) and the
    /// descriptors of the frames in it: the fast path's view, which takes
    /// its spans once per batch.
    public func withFrames<R>(_ body: (inout MutableSpan<UInt8>, inout MutableSpan<FrameDescriptor>) -> R) -> R {
        var ds = descriptors
        descriptors = []  // `ds` is now the only reference: no copy on write
        defer { descriptors = ds }
        let base = unsafe storage.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var arena = unsafe UnsafeMutableBufferPointer(start: base, count: capacity &* slotSize).mutableSpan
        var all = ds.mutableSpan
        var frames = all._mutatingExtracting(0..<count)
        return body(&arena, &frames)
    }

    /// Copies a received frame into the next slot. False when the batch is
    /// full or the frame does not fit.
    public func append(_ bytes: Span<UInt8>, interface: UInt16) -> Bool {
        guard count < capacity, bytes.count <= slotSize - headroom else { return false }
        let h = headroom
        withSlot(count) { s in for k in 0..<bytes.count { s[h + k] = bytes[k] } }
        descriptors[count] = FrameDescriptor(bounds: FrameBounds(start: headroom, length: bytes.count), interface: interface, verdict: .pass)
        count += 1
        return true
    }

    public func removeAll() { count = 0 }

    /// Lets `body` write a frame of its own into the next slot (at the
    /// headroom); when it names an interface, the frame is queued for it.
    public func emit(_ body: (inout MutableSpan<UInt8>, inout FrameBounds) -> UInt16?) -> Bool {
        guard count < capacity else { return false }
        var bounds = FrameBounds(start: headroom, length: 0)
        guard let iface = withSlot(count, { body(&$0, &bounds) }) else { return false }
        descriptors[count] = FrameDescriptor(bounds: bounds, interface: iface, verdict: .transmit(interface: iface))
        count += 1
        return true
    }

    // The I/O backend's side: ring frames are copied in, and transmitted
    // from, raw memory. These are the only raw accesses to the arena.

    /// Copies `length` bytes at `bytes` into the next slot.
    @unsafe
    public func append(unsafe bytes: UnsafeRawPointer, length: Int, interface: UInt16) -> Bool {
        guard count < capacity, length >= 0, length <= slotSize - headroom else { return false }
        unsafe storage.baseAddress!.advanced(by: count * slotSize + headroom).copyMemory(from: bytes, byteCount: length)
        descriptors[count] = FrameDescriptor(bounds: FrameBounds(start: headroom, length: length), interface: interface, verdict: .pass)
        count += 1
        return true
    }

    /// Lets `read` write a frame straight into slot 0 of an empty batch (no
    /// copy after the kernel's): at the headroom, with `before` bytes ahead of
    /// it for what precedes the frame (a virtio-net header). `read` gets the
    /// address and the room, and returns the bytes it wrote, or what it would
    /// have written (more than the room: cut short), or a negative error. The
    /// frame, those bytes less `before`, is then the batch's one frame.
    /// Returns its length, or nil when there is none (or it did not fit).
    @unsafe
    public func receive(before: Int, interface: UInt16, _ read: (UnsafeMutableRawPointer, Int) -> Int) -> Int? {
        precondition(count == 0 && before >= 0 && before <= headroom)
        let room = slotSize &- headroom &+ before
        let n = unsafe read(storage.baseAddress!.advanced(by: headroom &- before), room)
        guard n > before, n <= room else { return nil }
        descriptors[0] = FrameDescriptor(bounds: FrameBounds(start: headroom, length: n &- before), interface: interface, verdict: .pass)
        count = 1
        return n &- before
    }

    /// Where frame `i` starts now (it may have grown into the headroom).
    @unsafe
    public func unsafeFrameAddress(_ i: Int) -> UnsafeRawPointer {
        precondition(i >= 0 && i < count)
        return unsafe UnsafeRawPointer(storage.baseAddress!.advanced(by: i * slotSize + descriptors[i].bounds.start))
    }
}
