import CLVSLinux
import LVSCore
import LVSPacket
import Logging
import Synchronization

/// Which worker gets each frame an interface receives, decided in the
/// kernel (bpf/lvsd_fanout.bpf.c, run by every ring's PACKET_FANOUT_EBPF
/// group): a connection's client side and reply side meet the worker that
/// owns it, without a frame crossing between threads. The client endpoint
/// picks the worker of a NAT, DR or TUN connection (its request's source,
/// its reply's destination); a FULLNAT reply's local port does (each
/// worker allocates the ports whose low bits are its index).
public final class WorkerSteering: Sendable {
    let program: BPFProgram
    let addresses: BPFAddressMap
    let installed: Mutex<[IPAddress: UInt32]> = Mutex([:])
    let prefixes: Mutex<(Int?, Int?)?> = Mutex(nil)
    let logger: Logger

    public init(workers: Int, logger: Logger) throws(BPFError) {
        addresses = try BPFAddressMap(capacity: 16384)
        program = try BPFProgram.steering(addresses: addresses)
        self.logger = logger
        try Self.configure(program, workers: workers)
    }

    /// Tells a program (this one, or lvsd's XDP program) how many workers
    /// there are and which local-port bits name a FULLNAT connection's.
    static func configure(_ program: BPFProgram, workers: Int) throws(BPFError) {
        try program.set(UInt32(LVS_FANOUT_WORKERS.rawValue), UInt32(workers))
        try program.set(UInt32(LVS_FANOUT_PORT_MASK.rawValue), UInt32(FullNATPortPool<IPv4Address>.workerBits(workers: workers)))
    }

    /// Tells a program the client prefixes to hash when a service is persistent.
    static func configure(_ program: BPFProgram, prefixes: (Int?, Int?)) throws(BPFError) {
        // Stored as the length plus one; 0 hashes the port too.
        try program.set(UInt32(LVS_FANOUT_PREFIX4.rawValue), prefixes.0.map { UInt32($0 + 1) } ?? 0)
        try program.set(UInt32(LVS_FANOUT_PREFIX6.rawValue), prefixes.1.map { UInt32($0 + 1) } ?? 0)
    }

    /// The flags a program's address map holds for `ownership`.
    static func addressFlags(_ ownership: Ownership) -> [IPAddress: UInt32] {
        var wanted: [IPAddress: UInt32] = [:]
        for a in ownership.owned { wanted[a, default: 0] |= UInt32(LVS_XDP_OWNED) }
        for a in ownership.localAddresses { wanted[a, default: 0] |= UInt32(LVS_FANOUT_LOCAL) }
        return wanted
    }

    /// The program, for the rings' fanout groups.
    var descriptor: Int32 { program.descriptor }

    /// Brings the program's view to `ownership`, changing only what differs.
    public func update(_ ownership: Ownership) {
        let wanted = Self.addressFlags(ownership)
        installed.withLock { installed in
            for (a, flags) in wanted where installed[a] != flags { set(a, flags) }
            for a in installed.keys where wanted[a] == nil { set(a, 0) }
            installed = wanted
        }
        let wantedPrefixes = (ownership.clientPrefix4, ownership.clientPrefix6)
        prefixes.withLock { current in
            if let current, current == wantedPrefixes { return }
            do {
                try Self.configure(program, prefixes: wantedPrefixes)
                current = wantedPrefixes
            } catch {
                logger.warning("worker steering: \(error)")
            }
        }
    }

    func set(_ address: IPAddress, _ flags: UInt32) {
        do { try addresses.set(address, flags: flags) } catch { logger.warning("worker steering: \(error)") }
    }

    /// The worker the program picks for `frame` (BPF_PROG_TEST_RUN), for tests.
    public func worker(for frame: [UInt8]) throws(BPFError) -> Int {
        Int(try program.run(frame).verdict)
    }
}
