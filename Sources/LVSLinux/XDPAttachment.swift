import CLVSLinux
import LVSCore
import LVSPacket
import LVSSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `--io xdp`: an XDP program on every served interface that redirects
/// lvsd's frames (to an owned address, or from a NAT real server to anything
/// but a host address) to an AF_XDP socket per receive queue, and passes the
/// rest to the kernel, where the AF_PACKET ring still sees it. The program
/// attaches natively where the driver can (veth can) and in generic mode
/// where not; the sockets bind zero-copy where the driver can, copy where not.
final class XDPAttachment: @unchecked Sendable {  // used under DataPlane's lock only
    let addressMap: BPFAddressMap
    var programs: [(interface: UInt16, program: BPFProgram)] = []
    var installed: [IPAddress: UInt32] = [:]
    var prefixes: (Int?, Int?)? = nil
    let logger: Logger

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Attaches to every interface and gives each worker the sockets of its
    /// queues (queue q to worker q mod workers). All or nothing: on failure
    /// nothing stays attached.
    init(interfaces: [UInt16], workers: [Worker], logger: Logger) throws(Failure) {
        self.logger = logger
        do { addressMap = try BPFAddressMap(capacity: 16384) } catch { throw Failure(description: error.description) }
        var opened: [(Worker, OpaquePointer)] = unsafe []
        do throws(Failure) {
            for index in interfaces {
                guard let name = NetworkInterface.name(index: UInt32(index)) else { throw Failure(description: "interface \(index): no name") }
                let queues = NetworkInterface.receiveQueues(name)
                let program: BPFProgram
                do {
                    program = try BPFProgram.redirect(addresses: addressMap, queues: queues, attachTo: Int32(index))
                    // Before any socket is open: until then every frame passes.
                    try WorkerSteering.configure(program, workers: workers.count)
                } catch {
                    throw Failure(description: "\(name): \(error)")
                }
                programs.append((index, program))
                for q in 0..<queues {
                    var rc: Int32 = 0
                    guard let socket = unsafe lvs_xsk_open(program.raw, name, UInt32(q), &rc) else {
                        throw Failure(description: SystemError("\(name) queue \(q): AF_XDP socket", errno: -rc).description)
                    }
                    // The socket is its worker's from here: the worker closes it, or this cleanup does if it never starts.
                    let worker = workers[q % workers.count]
                    unsafe worker.sockets.append(socket)
                    worker.socketInterface.append(index)
                    unsafe opened.append((worker, socket))
                }
                logger.info(
                    "AF_XDP attached",
                    metadata: [
                        "interface": "\(name)", "queues": "\(queues)",
                        "mode": "\(program.attachment ?? "-")",
                    ])
            }
        } catch {
            for k in unsafe opened.indices {
                let (worker, socket) = unsafe opened[k]
                unsafe lvs_xsk_close(socket)
                if let k = unsafe worker.sockets.firstIndex(of: socket) {
                    unsafe worker.sockets.remove(at: k)
                    worker.socketInterface.remove(at: k)
                }
            }
            detach()
            throw error
        }
    }

    /// Brings the address map and the steering to `ownership` and `host`, changing only what differs.
    func update(_ ownership: Ownership, host: [IPAddress]) {
        let wantedPrefixes = (ownership.clientPrefix4, ownership.clientPrefix6)
        if prefixes == nil || prefixes! != wantedPrefixes {
            do {
                for (_, program) in programs { try WorkerSteering.configure(program, prefixes: wantedPrefixes) }
                prefixes = wantedPrefixes
            } catch {
                logger.warning("XDP \(error)")
            }
        }
        var wanted = WorkerSteering.addressFlags(ownership)
        for a in ownership.replySources { wanted[a, default: 0] |= UInt32(LVS_XDP_REPLY_SOURCE) }
        for a in host { wanted[a, default: 0] |= UInt32(LVS_XDP_HOST) }
        guard wanted != installed else { return }
        for (a, flags) in wanted where installed[a] != flags { set(a, flags) }
        for a in installed.keys where wanted[a] == nil { set(a, 0) }
        installed = wanted
    }

    func set(_ address: IPAddress, _ flags: UInt32) {
        do { try addressMap.set(address, flags: flags) } catch { logger.warning("XDP \(error)") }
    }

    /// Detaches every program; the kernel has the interfaces' frames back.
    func detach() {
        programs = []
    }
}
