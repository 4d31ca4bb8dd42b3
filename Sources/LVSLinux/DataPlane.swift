import CLVSLinux
import LVSCore
import LVSPacket
import LVSSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How frames reach lvsd.
public enum PacketIO: String, Sendable, CaseIterable {
    /// An AF_PACKET ring per interface: every frame, also the kernel's.
    case packet
    /// AF_XDP sockets for lvsd's frames (`XDPAttachment`), with the
    /// AF_PACKET ring kept for what the kernel keeps (ARP, neighbour discovery).
    case xdp
}

/// The data plane: per worker, one TPACKET_V2 receive ring per interface
/// (with several workers, a fanout group whose steering program gives each
/// frame to the worker that owns its connection: `WorkerSteering`) and,
/// with `--io xdp`, the AF_XDP sockets of its queues; frames
/// copied into the worker's batch arena, run through its engine's
/// `Director` under one lock per batch, and sent with one sendmmsg (or one
/// AF_XDP kick) per interface per batch. An idle worker sleeps in poll.
public final class DataPlane: Sendable {
    let engines: [Engine]
    let interfaces: [InterfaceConfiguration]
    let io: PacketIO
    let hostAddresses: [IPAddress]
    let logger: Logger
    let workers: Mutex<[Worker]> = Mutex([])
    let xdp: Mutex<XDPAttachment?> = Mutex(nil)
    let steering: Mutex<WorkerSteering?> = Mutex(nil)
    /// Entries of the kernel forwarding's map (`--kernel-forwarding`), 0 without it.
    let kernelFlowCapacity: Int

    /// `hostAddresses`: the kernel's own addresses, whose frames XDP leaves
    /// to the kernel even when they come from a NAT real server (health checks).
    /// `kernelFlowCapacity`: with `--kernel-forwarding`, how many connection
    /// directions the kernel may forward.
    public init(
        engines: [Engine], interfaces: [InterfaceConfiguration], io: PacketIO = .packet, hostAddresses: [IPAddress] = [], kernelFlowCapacity: Int = 0,
        logger: Logger
    ) {
        self.engines = engines
        self.interfaces = interfaces
        self.io = io
        self.hostAddresses = hostAddresses
        self.kernelFlowCapacity = kernelFlowCapacity
        self.logger = logger
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    /// The I/O actually in use: AF_PACKET where XDP was asked for and failed.
    public var activeIO: PacketIO { xdp.withLock { $0 == nil } ? .packet : .xdp }

    /// Opens every ring (and the XDP sockets), then starts the workers.
    public func start() throws(Failure) {
        try open()
        run()
    }

    /// Opens every ring (and the XDP sockets); frames queue in them until `run`.
    public func open() throws(Failure) {
        var made: [Worker] = []
        let fanout = engines.count > 1 ? Int32(getpid() & 0xFFFF) : 0
        var steeringProgram: Int32 = -1
        if engines.count > 1 {
            do {
                let s = try WorkerSteering(workers: engines.count, logger: logger)
                s.update(engines[0].director.withLock { $0.ownership })
                steeringProgram = s.descriptor
                steering.withLock { $0 = s }
            } catch {
                throw Failure(description: "--workers \(engines.count) needs the steering program: \(error.description)")
            }
        }
        var kernelForwarding: KernelForwarding? = nil
        if kernelFlowCapacity > 0 {
            do {
                kernelForwarding = try KernelForwarding(interfaces: interfaces.map { Int32($0.index) }, capacity: kernelFlowCapacity)
            } catch {
                throw Failure(description: "--kernel-forwarding needs its tc program: \(error.description)")
            }
        }
        func fail(_ worker: Worker, _ what: String, _ errno: Int32) -> Failure {
            for m in made { m.close() }
            worker.close()
            return Failure(description: SystemError(what, errno: errno).description)
        }
        for (w, engine) in engines.enumerated() {
            // Each worker counts its connections in slots of its own.
            let share = UInt32((kernelForwarding?.slots ?? 0) / engines.count)
            let worker = Worker(
                index: w, engine: engine, kernelForwarding: kernelForwarding, slots: share * UInt32(w)..<share * UInt32(w + 1), logger: logger)
            for iface in interfaces {
                for (k, ring) in Self.rings(kernelForwarding: kernelForwarding != nil).enumerated() {
                    // The ring's state is the worker's from here until `close`, after its thread has stopped.
                    let opened = UnsafeMutablePointer<lvs_ring>.allocate(capacity: 1)
                    // Rings join their interface's group in worker order: the steering program's numbering.
                    let group = fanout == 0 ? 0 : fanout + Int32(iface.index) + Int32(k) << 12
                    let rc = unsafe lvs_ring_open(opened, Int32(iface.index), ring.protocol, 1 << 18, ring.blocks, group, steeringProgram)
                    guard rc == 0 else {
                        unsafe opened.deallocate()
                        throw fail(worker, "AF_PACKET ring on interface \(iface.index)", -rc)
                    }
                    unsafe worker.rings.append(opened)
                    worker.ringInterface.append(iface.index)
                }
                // The steering gives ARP and neighbour discovery to worker 0; the others learn next hops from a copy of the answers.
                if w > 0 {
                    let fd = lvs_neighbour_socket(Int32(iface.index))
                    guard fd >= 0 else { throw fail(worker, "neighbour socket on interface \(iface.index)", -fd) }
                    worker.neighbourSockets.append(fd)
                    worker.neighbourInterface.append(iface.index)
                }
            }
            made.append(worker)
        }
        if io == .xdp {
            do {
                let attachment = try XDPAttachment(interfaces: interfaces.map(\.index), workers: made, logger: logger)
                let ownership = made[0].engine.director.withLock { $0.ownership }
                attachment.update(ownership, host: hostAddresses)
                xdp.withLock { $0 = attachment }
            } catch {
                logger.warning("AF_XDP unavailable, using AF_PACKET: \(error.description)")
            }
        }
        workers.withLock { $0 = made }
    }

    /// Each worker's rings on each interface (the first one sends): one for
    /// every frame, seen before tc ingress; with kernel forwarding, one per
    /// protocol lvsd serves, seen after it, so that the frames the tc
    /// program redirects never reach lvsd (ARP's ring is small).
    static func rings(kernelForwarding: Bool) -> [(protocol: Int32, blocks: UInt32)] {
        kernelForwarding ? [(0x0800, 64), (0x86DD, 64), (0x0806, 2)] : [(0x0003, 64)]
    }

    /// Starts the workers on what `open` opened.
    public func run() {
        for w in workers.withLock({ $0 }) { w.start() }
    }

    /// Drops the frames the rings hold that the kernel received at or
    /// before `time` (ns of CLOCK_REALTIME), before `run`: in a handover,
    /// the previous lvsd forwarded those (see `pause`).
    public func discardPending(receivedBy time: UInt64) {
        for w in workers.withLock({ $0 }) { w.discardPending(receivedBy: time) }
    }

    /// Has every worker forward the frames the kernel received until the
    /// worker saw the request, and stop, and waits until each has (1 s at
    /// most); later frames queue in the rings. Returns the earliest of
    /// those moments (ns of CLOCK_REALTIME): every frame received by then
    /// has been forwarded. Nil if a worker did not stop.
    public func pause() -> UInt64? {
        let all = workers.withLock { $0 }
        for w in all { w.paused.store(true, ordering: .sequentiallyConsistent) }
        for _ in 0..<1000 {
            if all.allSatisfy({ $0.idle.load(ordering: .sequentiallyConsistent) }) {
                return all.map { $0.drainedAt.load(ordering: .sequentiallyConsistent) }.min()
            }
            usleep(1000)
        }
        return nil
    }

    public func resume() {
        for w in workers.withLock({ $0 }) {
            w.paused.store(false, ordering: .sequentiallyConsistent)
        }
    }

    /// Tells the XDP and steering programs which frames are lvsd's and
    /// whose; call it when the configuration changes (cheap when nothing did).
    public func update(_ ownership: Ownership) {
        xdp.withLock { $0?.update(ownership, host: hostAddresses) }
        steering.withLock { $0?.update(ownership) }
    }

    public func stop() {
        let all = workers.withLock { $0 }
        for w in all { w.join() }
        // Detached first, so that no frame is sent to a closed socket.
        xdp.withLock {
            $0?.detach()
            $0 = nil
        }
        for w in all { w.close() }
    }
}

/// One worker thread and what it owns. Its pointers are to rings, AF_XDP
/// sockets and frames it opened itself and closes only after its thread
/// has stopped (`close` joins first), so none outlives what it points at.
@safe final class Worker: @unchecked Sendable {
    let index: Int
    let engine: Engine
    let running = Atomic<Bool>(true)
    /// Asked to stop reading (`DataPlane.pause`); stopped, its rings found
    /// empty at `drainedAt` (ns of CLOCK_REALTIME).
    let paused = Atomic<Bool>(false)
    let idle = Atomic<Bool>(false)
    let drainedAt = Atomic<UInt64>(0)
    /// While pausing: frames the kernel received after this (ns of CLOCK_REALTIME) are left in the rings.
    var cutoff = UInt64.max
    let logger: Logger
    var rings: [UnsafeMutablePointer<lvs_ring>] = unsafe []
    var ringInterface: [UInt16] = []
    var sockets: [OpaquePointer] = unsafe []
    var socketInterface: [UInt16] = []
    /// ARP replies and neighbour advertisements, for a worker the steering does not give them.
    var neighbourSockets: [Int32] = []
    var neighbourInterface: [UInt16] = []
    /// Every ring's and socket's descriptor, for poll.
    var readable: [Int32] = []
    /// The ring each interface sends on (its first).
    var senders: [Int] = []
    let batch = FrameBatch(capacity: 64)
    var thread: OSThread? = nil
    /// Frames lost in the I/O since they were last counted in the engine
    /// (by `DropReason`: oversized, not taken to send, dropped by a full ring).
    var oversized: UInt64 = 0
    var unsent: UInt64 = 0
    var offloadRefused: UInt64 = 0
    var superFramesCut: UInt64 = 0
    /// A frame too large for a ring slot (a super-frame), read whole from its
    /// socket, or a neighbour socket's frame; a super-frame on its way through
    /// the engine whole (`forwardWhole`), and the virtio-net header it leaves with.
    let whole = FrameBatch(capacity: 1, slotSize: 128 + 65536 + 64)
    var gsoHeader = [UInt8](repeating: 0, count: OffloadHeader.size)
    /// The segments cut from super-frames, one at a time.
    var scratch: [UInt8]
    var announced: Set<IPAddress> = []
    /// When each newly owned address is announced again. A new owner (a
    /// VRRP master taking over) announces at once, after 1 s and after 5 s,
    /// as keepalived repeats its gratuitous ARPs: one lost frame must not
    /// leave a router sending to the old owner.
    var repeats: [IPAddress: ArraySlice<UInt64>] = [:]
    static let repeatAfter: [UInt64] = [1000, 5000]
    /// Reused per batch: frames and lengths for sendmmsg.
    var frames = unsafe [UnsafePointer<UInt8>?](repeating: nil, count: 64)
    var lengths = [UInt32](repeating: 0, count: 64)

    /// `--kernel-forwarding`: the kernel's side, and the connections this
    /// worker handed down, each counted in slots of its own (`slotBase` on):
    /// `counted` holds what each slot had counted at the last sweep.
    let kernelForwarding: KernelForwarding?
    var handedDown: [KernelFlowKey: HandedDown] = [:]
    var freeSlots: [UInt32] = []
    var counted: [(packets: UInt64, bytes: UInt64)] = []
    let slotBase: UInt32
    var sweeps: UInt64 = 0
    var lastKernelSweep: UInt64 = 0
    /// The engine's `rulesGeneration` at the last sweep.
    var sweptGeneration = UInt64.max
    /// Reused by each sweep: what the kernel forwarded since the last, read before the engine's lock is taken.
    var kernelReadings: [(KernelFlowKey, KernelCounts)] = []
    var kernelRequests: [KernelFlowRequest] = []

    struct HandedDown {
        var flow: KernelFlow
        var toRealSlot: UInt32
        var toClientSlot: UInt32?
    }

    /// `slots`: the kernel forwarding's count slots that are this worker's.
    init(index: Int, engine: Engine, kernelForwarding: KernelForwarding? = nil, slots: Range<UInt32> = 0..<0, logger: Logger) {
        self.index = index
        self.engine = engine
        self.kernelForwarding = kernelForwarding
        slotBase = slots.lowerBound
        freeSlots = slots.reversed()
        counted = [(packets: UInt64, bytes: UInt64)](repeating: (0, 0), count: slots.count)
        self.logger = logger
        scratch = [UInt8](repeating: 0, count: batch.slotSize - batch.headroom)
    }

    var stopped: Bool { !running.load(ordering: .relaxed) }

    func start() {
        thread = OSThread(name: "lvsd-worker-\(index)") { [self] in run() }
    }

    func join() {
        running.store(false, ordering: .relaxed)
        thread?.join()
    }

    /// Releases the frames at the head of each ring that the kernel received
    /// by `time`, and the whole copies queued behind them; before the thread starts.
    func discardPending(receivedBy time: UInt64) {
        for r in unsafe rings.indices {
            var count: UInt32 = 0
            while let first = unsafe lvs_ring_block(rings[r], &count) {
                var frame: UnsafeMutableRawPointer? = unsafe first
                var old: UInt32 = 0
                while old < count, unsafe lvs_ring_frame_time(rings[r], old) <= time, let f = unsafe frame {
                    var length: UInt32 = 0
                    var wireLength: UInt32 = 0
                    var status: UInt32 = 0
                    var next: UnsafeMutableRawPointer? = nil
                    _ = unsafe lvs_ring_frame(f, &length, &wireLength, &status, &next)
                    unsafe frame = unsafe next
                    if status & UInt32(LVS_TP_STATUS_COPY) != 0 { unsafe lvs_ring_discard(rings[r]) }
                    old += 1
                }
                // Only those: the rest are the successor's to forward.
                unsafe rings[r].pointee.taken = old
                unsafe lvs_ring_release(rings[r])
                if old < count { break }
            }
        }
    }

    /// Called once the thread has stopped (or never started): nothing uses the rings and sockets any more.
    func close() {
        for k in unsafe rings.indices {
            unsafe lvs_ring_close(rings[k])
            unsafe rings[k].deallocate()
        }
        for k in unsafe sockets.indices { unsafe lvs_xsk_close(sockets[k]) }
        for fd in neighbourSockets { Glibc.close(fd) }
        neighbourSockets = []
        unsafe rings = unsafe []
        unsafe sockets = unsafe []
    }

    func run() {
        var lastHousekeeping: UInt64 = 0
        var lastNeighbourRead: UInt64 = 0
        readable = unsafe rings.map { unsafe $0.pointee.fd } + sockets.map { unsafe lvs_xsk_fd($0) } + neighbourSockets
        senders = ringInterface.indices.filter { ringInterface.firstIndex(of: ringInterface[$0]) == $0 }
        // The frames an AF_XDP receive or a ring's run hands out stay readable
        // until they are released, and are copied into the batch before that.
        // `frames` and `lengths` hold 64 entries, and a receive asks for at most
        // what the batch (64 frames) has room for.
        while !stopped {
            let pausing = paused.load(ordering: .sequentiallyConsistent)
            if pausing && idle.load(ordering: .relaxed) {
                usleep(200)
                continue
            }
            if !pausing && idle.load(ordering: .relaxed) { idle.store(false, ordering: .relaxed) }
            // A pause forwards what the kernel received until it was seen, then stops: it ends on the first
            // round that finds no such frame (the later ones are the successor's, and wait in the rings).
            if pausing && cutoff == .max { cutoff = WallClock.nanoseconds() }
            if !pausing { cutoff = .max }
            var busy = false
            for s in unsafe sockets.indices {
                for _ in 0..<4 {
                    if batch.count == batch.capacity { flush() }
                    let n = unsafe frames.withUnsafeMutableBufferPointer { f in
                        unsafe lengths.withUnsafeMutableBufferPointer { l in
                            unsafe lvs_xsk_receive(sockets[s], f.baseAddress, l.baseAddress, UInt32(batch.capacity - batch.count))
                        }
                    }
                    guard n > 0 else { break }
                    busy = true
                    for k in 0..<Int(n) {
                        guard unsafe batch.append(unsafe: UnsafeRawPointer(frames[k]!), length: Int(lengths[k]), interface: socketInterface[s]) else {
                            oversized &+= 1
                            continue
                        }
                        // XDP is not told a frame's checksum state: on a veth, the
                        // local stack's CHECKSUM_PARTIAL frames arrive unfinished.
                        let last = batch.count &- 1
                        let bounds = batch.descriptors[last].bounds
                        _ = batch.withSlot(last) { SoftwareOffload.finishIfPartial(&$0, frame: bounds) }
                    }
                    unsafe lvs_xsk_release(sockets[s])
                }
            }
            for r in unsafe rings.indices {
                // At most a few blocks per ring per round, so that one busy interface cannot starve the others.
                for _ in 0..<4 {
                    var count: UInt32 = 0
                    guard let first = unsafe lvs_ring_block(rings[r], &count) else { break }
                    var frame: UnsafeMutableRawPointer? = unsafe first
                    let vnet = unsafe rings[r].pointee.vnet != 0
                    var taken: UInt32 = 0
                    while taken < count {
                        guard let f = unsafe frame else { break }
                        if pausing, unsafe lvs_ring_frame_time(rings[r], taken) > cutoff { break }
                        taken &+= 1
                        busy = true
                        var length: UInt32 = 0
                        var wireLength: UInt32 = 0
                        var status: UInt32 = 0
                        var next: UnsafeMutableRawPointer? = nil
                        let data = unsafe lvs_ring_frame(f, &length, &wireLength, &status, &next)!
                        unsafe frame = unsafe next
                        if status & LVS_TP_STATUS_OUTGOING != 0 {
                            // lvsd's own GSO frames leave through the qdisc, where a fanout group sees them.
                            if status & UInt32(LVS_TP_STATUS_COPY) != 0 { unsafe lvs_ring_discard(rings[r]) }
                        } else if status & UInt32(LVS_TP_STATUS_COPY) != 0 {
                            unsafe takeWhole(from: rings[r], interface: ringInterface[r])
                        } else if wireLength > length {
                            oversized &+= 1  // cut short, and no whole copy queued (the socket's buffer was full)
                        } else if vnet {
                            // The kernel writes the virtio-net header just before the frame, inside the slot.
                            let header = unsafe OffloadHeader(Span(_unsafeStart: data - OffloadHeader.size, count: OffloadHeader.size), at: 0)
                            unsafe take(UnsafeRawPointer(data), length: Int(length), header: header, interface: ringInterface[r])
                        } else {
                            unsafe take(UnsafeRawPointer(data), length: Int(length), header: OffloadHeader(), interface: ringInterface[r])
                        }
                    }
                    // Those after a pause's cutoff stay in the ring.
                    unsafe rings[r].pointee.taken = taken
                    unsafe lvs_ring_release(rings[r])
                    if taken < count { break }
                }
            }
            // At most once a millisecond: a busy loop must not pay a recv per round for the rare ARP reply.
            let now = MonotonicClock.milliseconds()
            if now != lastNeighbourRead {
                lastNeighbourRead = now
                for k in neighbourSockets.indices where takeNeighbourFrame(neighbourSockets[k], interface: neighbourInterface[k]) { busy = true }
            }
            if batch.count > 0 { flush() }
            if now &- lastHousekeeping >= 100 {
                lastHousekeeping = now
                housekeeping(now: now)
            }
            if pausing && !busy {
                drainedAt.store(cutoff, ordering: .sequentiallyConsistent)
                idle.store(true, ordering: .sequentiallyConsistent)
                continue
            }
            if !busy {
                // poll reads `count` descriptors from the array, which outlives the call.
                _ = unsafe readable.withUnsafeBufferPointer { unsafe lvs_wait_readable($0.baseAddress, UInt32($0.count), 50) }
            }
        }
    }

    /// Puts a received frame into the batch as it would travel on the wire:
    /// a partial checksum finished, a super-frame cut into its segments.
    /// `data` is readable for `length` bytes until the caller releases it.
    @unsafe
    func take(_ data: UnsafeRawPointer, length: Int, header: OffloadHeader, interface: UInt16) {
        if batch.count == batch.capacity { flush() }
        if header.isPlain {
            if unsafe !batch.append(unsafe: data, length: length, interface: interface) { oversized &+= 1 }
            return
        }
        let frame = unsafe Span(_unsafeStart: data.assumingMemoryBound(to: UInt8.self), count: length)
        if header.isSegmented {
            if unsafe forwardWhole(data, length: length, header: header, interface: interface) { return }
            superFramesCut &+= 1
            // Taken out while the segments are built, so that flushing the batch may touch `self`.
            var buffer = scratch
            scratch = []
            defer { scratch = buffer }
            var out = buffer.mutableSpan
            do {
                _ = try SoftwareOffload.segment(frame, frame: FrameBounds(start: 0, length: length), header: header, scratch: &out) { segment in
                    if batch.count == batch.capacity { flush() }
                    return batch.append(segment, interface: interface)
                }
            } catch {
                offloadRefused &+= 1
            }
            return
        }
        guard unsafe batch.append(unsafe: data, length: length, interface: interface) else {
            oversized &+= 1
            return
        }
        let k = batch.count &- 1
        let bounds = batch.descriptors[k].bounds
        let finished = batch.withSlot(k) { slot in
            do {
                try SoftwareOffload.finishChecksum(&slot, frame: bounds, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
                return true
            } catch { return false }
        }
        if !finished {
            batch.count = k
            offloadRefused &+= 1
        }
    }

    /// A TCP super-frame through the engine whole and out as one GSO frame,
    /// for the kernel to cut after lvsd (one engine pass per 64 KiB of a bulk
    /// flow, not one per segment), when its connection allows it
    /// (`Director.processWhole`). False, with nothing changed, when it must
    /// be cut here first. The frames before it in the batch go first.
    @unsafe
    func forwardWhole(_ data: UnsafeRawPointer, length: Int, header: OffloadHeader, interface: UInt16) -> Bool {
        let kind = header.gsoType & ~OffloadHeader.gsoECN
        guard kind == OffloadHeader.gsoTCPv4 || kind == OffloadHeader.gsoTCPv6, header.flags & OffloadHeader.needsChecksum != 0 else { return false }
        if batch.count > 0 { flush() }
        // A frame read whole from its socket is there already (`takeWhole`).
        if whole.count == 0 {
            guard unsafe whole.append(unsafe: data, length: length, interface: interface) else { return false }
        }
        defer { whole.removeAll() }
        let now = MonotonicClock.milliseconds()
        var bounds = whole.descriptors[0].bounds
        let verdict = whole.withSlot(0) { slot in
            engine.director.withLock { d in d.processWhole(&slot, frame: &bounds, interface: interface, segmentSize: Int(header.segmentSize), now: now) }
        }
        guard let verdict else { return false }
        guard case .transmit(let out) = verdict else { return true }
        guard let r = ringInterface.firstIndex(of: out), unsafe rings[r].pointee.vnet != 0,
            let gso = whole.withSlot(0, { SoftwareOffload.partialAgain(&$0, frame: bounds, like: header) })
        else {
            offloadRefused &+= 1
            return true
        }
        var vnet = gsoHeader.mutableSpan
        gso.store(&vnet, at: 0)
        whole.descriptors[0].bounds = bounds
        let frame = unsafe whole.unsafeFrameAddress(0).assumingMemoryBound(to: UInt8.self)
        let fd = unsafe rings[r].pointee.gso_fd >= 0 ? rings[r].pointee.gso_fd : rings[r].pointee.send_fd
        // `gsoHeader` and the slot outlive the call, which copies both.
        let rc = unsafe gsoHeader.withUnsafeBufferPointer { unsafe lvs_send_offloaded(fd, $0.baseAddress, frame, UInt32(bounds.length)) }
        if rc != 0 { unsent &+= 1 }
        return true
    }

    /// The whole of a frame too large for its ring slot, from the socket.
    @unsafe
    func takeWhole(from ring: UnsafeMutablePointer<lvs_ring>, interface: UInt16) {
        // `read` writes only within the room it is given.
        let length = unsafe whole.receive(before: OffloadHeader.size, interface: interface) {
            unsafe lvs_ring_copy(ring, $0.assumingMemoryBound(to: UInt8.self), $1)
        }
        guard let length else {
            oversized &+= 1
            return
        }
        defer { whole.removeAll() }
        let header = whole.withSlot(0) { OffloadHeader($0.span, at: whole.headroom &- OffloadHeader.size) }
        // The slot is the worker's and is not touched by anything else until `take` returns.
        unsafe take(whole.unsafeFrameAddress(0), length: length, header: header, interface: interface)
    }

    /// One frame from a neighbour socket, if one waits.
    func takeNeighbourFrame(_ fd: Int32, interface: UInt16) -> Bool {
        var waiting = false
        // `read` writes only within the room it is given.
        let length = unsafe whole.receive(before: 0, interface: interface) {
            let n = unsafe lvs_receive_frame(fd, $0.assumingMemoryBound(to: UInt8.self), $1)
            waiting = n > 0
            return n
        }
        guard waiting else { return false }
        guard let length else {
            oversized &+= 1
            return true
        }
        // As in `takeWhole`; a plain frame is copied into the batch.
        unsafe take(whole.unsafeFrameAddress(0), length: length, header: OffloadHeader(), interface: interface)
        whole.removeAll()
        return true
    }

    /// Runs the batch through the engine and sends what it says to send.
    func flush() {
        let now = MonotonicClock.milliseconds()
        engine.director.withLock { d in
            d.process(batch, now: now)
            countLosses(&d)
            if let kernelForwarding {
                d.takeKernelFlowRequests(into: &kernelRequests)
                for r in kernelRequests { handDown(r.key, r.handDown ? d.kernelFlow(r.key, now: now) : nil, kernelForwarding, &d, now: now) }
                kernelRequests.removeAll(keepingCapacity: true)
            }
        }
        transmit()
    }

    /// Hands a connection to the kernel (`flow`), or takes it back (nil),
    /// counting what the kernel forwarded of it until then (under the engine's lock).
    func handDown(_ key: KernelFlowKey, _ flow: KernelFlow?, _ kernel: KernelForwarding, _ d: inout Director, now: UInt64) {
        if let old = handedDown[key] {
            if old.flow == flow { return }
            let c = forwarded(old, kernel)
            _ = d.kernelForwarded(key, toReal: c.toReal, toClient: c.toClient, now: now)
            release(key, old, kernel)
        }
        // Without slots for it (the map is full), the connection stays lvsd's.
        guard let flow, freeSlots.count >= (flow.toClient == nil ? 1 : 2) else { return }
        let h = HandedDown(flow: flow, toRealSlot: freeSlots.removeLast(), toClientSlot: flow.toClient == nil ? nil : freeSlots.removeLast())
        // Counted from what its slots hold now.
        _ = forwarded(h, kernel)
        do {
            try kernel.set(flow.toReal, slot: h.toRealSlot)
            if let reply = flow.toClient, let slot = h.toClientSlot { try kernel.set(reply, slot: slot) }
            handedDown[key] = h
        } catch {
            release(key, h, kernel)
        }
    }

    func release(_ key: KernelFlowKey, _ h: HandedDown, _ kernel: KernelForwarding) {
        kernel.remove(h.flow)
        freeSlots.append(h.toRealSlot)
        if let slot = h.toClientSlot { freeSlots.append(slot) }
        handedDown[key] = nil
    }

    typealias KernelCounts = (toReal: (packets: UInt64, bytes: UInt64), toClient: (packets: UInt64, bytes: UInt64))

    /// What the kernel forwarded of a connection since it was last asked (in both directions).
    func forwarded(_ h: HandedDown, _ kernel: KernelForwarding) -> KernelCounts {
        func since(_ slot: UInt32) -> (packets: UInt64, bytes: UInt64) {
            let now = kernel.count(slot)
            let i = Int(slot &- slotBase)
            let was = counted[i]
            counted[i] = now
            return (now.packets &- was.packets, now.bytes &- was.bytes)
        }
        return (since(h.toRealSlot), h.toClientSlot.map { since($0) } ?? (0, 0))
    }

    /// Once a second: what the kernel forwarded of each connection handed
    /// down is counted and keeps it alive; one that is gone, or whose state
    /// moved on, is taken back; one whose rules changed is handed down
    /// again with the new ones. Only connections the kernel forwarded
    /// something of go to the engine, unless its `rulesGeneration` moved
    /// (then their rules are rebuilt) or every tenth time (an idle one may
    /// have expired). The counts are read from memory before the engine's lock is taken.
    func sweepKernelFlows(_ kernel: KernelForwarding, now: UInt64) {
        lastKernelSweep = now
        guard !handedDown.isEmpty else { return }
        sweeps &+= 1
        let generation = engine.director.withLock { $0.shared.rulesGeneration }
        let everyOne = sweeps % 10 == 0 || generation != sweptGeneration
        let unchanged = generation == sweptGeneration
        sweptGeneration = generation
        kernelReadings.removeAll(keepingCapacity: true)
        for (key, h) in handedDown {
            let c = forwarded(h, kernel)
            if everyOne || c.toReal.packets != 0 || c.toClient.packets != 0 { kernelReadings.append((key, c)) }
        }
        engine.director.withLock { d in
            for (key, c) in kernelReadings {
                guard let h = handedDown[key] else { continue }
                let rules = d.kernelForwarded(key, toReal: c.toReal, toClient: c.toClient, now: now, unchanged: unchanged ? h.flow : nil)
                if rules == h.flow { continue }
                release(key, h, kernel)
                if let rules { handDown(key, rules, kernel, &d, now: now) }
            }
        }
    }

    /// Hands the frames the I/O lost to the engine's drop counters (under its lock).
    func countLosses(_ d: inout Director) {
        if oversized > 0 { d.countDrops(.oversizedFrame, oversized) }
        if unsent > 0 { d.countDrops(.transmitFailed, unsent) }
        if offloadRefused > 0 { d.countDrops(.offloadUnsupported, offloadRefused) }
        d.shared.superFramesCut &+= superFramesCut
        superFramesCut = 0
        oversized = 0
        unsent = 0
        offloadRefused = 0
    }

    /// The frames sent point into the batch arena, which stays as it is
    /// until `removeAll` after the last send.
    func transmit() {
        for r in senders {
            let iface = ringInterface[r]
            let socket = unsafe socketInterface.firstIndex(of: iface).map { unsafe sockets[$0] }
            var n = 0
            for i in 0..<batch.count {
                guard case .transmit(let out) = batch.descriptors[i].verdict, out == iface else { continue }
                unsafe frames[n] = unsafe batch.unsafeFrameAddress(i).assumingMemoryBound(to: UInt8.self)
                lengths[n] = UInt32(batch.descriptors[i].bounds.length)
                n += 1
            }
            guard n > 0 else { continue }
            let sent = unsafe frames.withUnsafeBufferPointer { f in
                unsafe lengths.withUnsafeBufferPointer { l in
                    if let socket = unsafe socket {
                        unsafe lvs_xsk_send(socket, f.baseAddress, l.baseAddress, UInt32(n))
                    } else {
                        unsafe lvs_send_frames(rings[r].pointee.send_fd, rings[r].pointee.vnet, f.baseAddress, l.baseAddress, UInt32(n))
                    }
                }
            }
            // What the kernel would not take is lost, and counted: a partial
            // sendmmsg, a full transmit ring, an error.
            if Int(sent) < n { unsent &+= UInt64(n - max(0, Int(sent))) }
        }
        batch.removeAll()
    }

    /// Asks for unresolved next hops, announces newly owned addresses,
    /// counts the frames the kernel dropped because a ring was full.
    func housekeeping(now: UInt64) {
        let ifaces = Set(ringInterface)
        let ringDrops = unsafe rings.reduce(UInt64(0)) { unsafe $0 &+ UInt64(lvs_ring_drops($1)) }
        let owned: [IPAddress] = engine.director.withLock { d in
            if ringDrops > 0 { d.countDrops(.receiveRingFull, ringDrops) }
            countLosses(&d)
            while batch.count < batch.capacity {
                let queued = batch.emit { span, bounds in d.solicitNextHop(&span, frame: &bounds, now: now) }
                if !queued { break }
            }
            return d.ownedAddresses
        }
        // Worker 0 announces for all: the others would only repeat it.
        let fresh = index == 0 ? owned.filter { !announced.contains($0) } : []
        let ownedSet = Set(owned)
        for a in fresh { repeats[a] = Self.repeatAfter.map { now &+ $0 }[...] }
        let again = repeats.filter { ownedSet.contains($0.key) && ($0.value.first ?? .max) <= now }.map(\.key)
        if !fresh.isEmpty || !again.isEmpty {
            engine.director.withLock { d in
                for a in fresh + again {
                    for iface in ifaces where batch.count < batch.capacity {
                        _ = batch.emit { span, bounds in d.announce(&span, frame: &bounds, address: a, interface: iface) ? iface : nil }
                    }
                }
            }
            if !fresh.isEmpty {
                logger.info("announcing", metadata: ["addresses": "\(fresh.map(\.description).joined(separator: ","))", "worker": "\(index)"])
            }
        }
        if let kernelForwarding, now &- lastKernelSweep >= 1000 { sweepKernelFlows(kernelForwarding, now: now) }
        for a in again { repeats[a]?.removeFirst() }
        repeats = repeats.filter { ownedSet.contains($0.key) && !$0.value.isEmpty }
        announced = ownedSet
        if batch.count > 0 { transmit() }
    }
}
