import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSLinux
import LVSSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The running lvsd's side of a handover to a new one (`lvsd --takeover`):
///
/// 1. `prepare`: the workers forward what their rings hold and stop
///    (frames queue in the rings meanwhile; the successor's rings, open
///    by now, have them too, and it forwards those received after the
///    time this lvsd's rings were found empty), every
///    connection is written to the state file, whatever its state, and the
///    file is let go; the answer names the VRRP instances this lvsd is master of.
/// 2. `finish`: the successor has restored the connections and forwards.
///    This lvsd exits at once: it resigns nothing, withdraws nothing.
///
/// `abort`, or no `finish` within 10 s of `prepare`, and it serves again,
/// as if nothing had happened.
public final class HandoverAgent: Sendable {
    let plane: ControlPlane
    let dataPlane: DataPlane
    let state: StateFile
    let logger: Logger
    /// Which `prepare` is current (an old timer must not resume a later
    /// one), and whether it waits for its `finish` or `abort`.
    let round = Mutex<(number: Int, pending: Bool)>((0, false))

    public init(plane: ControlPlane, dataPlane: DataPlane, state: StateFile, logger: Logger) {
        self.plane = plane
        self.dataPlane = dataPlane
        self.state = state
        self.logger = logger
    }

    public func respond(_ step: HandoverStep) -> ControlResponse {
        switch step {
        case .prepare:
            let asked = MonotonicClock.milliseconds()
            guard let drained = dataPlane.pause() else {
                dataPlane.resume()
                return .failed(TableError("EBUSY", "a worker did not stop"))
            }
            let now = MonotonicClock.milliseconds()
            for e in plane.engines { e.director.withLock { $0.journalEverything(now: now) } }
            let written = MonotonicClock.milliseconds()
            state.release()
            let mine = round.withLock {
                $0 = ($0.number + 1, true)
                return $0.number
            }
            let masters = plane.vrrp.withLock { $0.filter { $0.status.state == "MASTER" }.map(\.status.name) }
            logger.notice("handing over: workers stopped in \(now - asked) ms, every connection written to \(state.path) in \(written - now) ms")
            after(10) { [self] in
                if round.withLock({ $0 == (mine, true) }) { resume("no successor finished the handover within 10 s") }
            }
            return .handover(
                HandoverState(
                    pid: getpid(), stateFile: state.path, forwardedUntil: drained, vrrpMasters: masters, counters: plane.carriedCounters(),
                    healthDown: plane.healthDown(),
                    syncDaemons: plane.sync.running, speaker: plane.speaker.withLock { $0 }, passive: plane.carriedPassive()))
        case .abort:
            guard round.withLock({ $0.pending }) else { return Self.outOfTurn }
            resume("the successor gave up")
            return .done
        case .finish:
            guard
                round.withLock({ s in
                    defer { s.pending = false }
                    return s.pending
                })
            else { return Self.outOfTurn }
            logger.notice("handed over: exiting")
            // After the answer has gone: exit without resigning VRRP or withdrawing routes.
            after(0.05) { _exit(0) }
            return .done
        }
    }

    static let outOfTurn = ControlResponse.failed(TableError("EINVAL", "no handover is being prepared"))

    func resume(_ why: String) {
        round.withLock { $0 = ($0.number + 1, false) }
        guard state.relock() else {
            logger.critical("handover abandoned (\(why)), but \(state.path) is another lvsd's now: exiting")
            exit(1)
        }
        dataPlane.resume()
        logger.warning("handover abandoned (\(why)): serving again")
    }
}

/// The new lvsd's side: one request to the running lvsd's socket.
public enum Takeover {
    public struct Failure: Error, CustomStringConvertible { public var description: String }

    public static func request(_ step: HandoverStep, socket: String) throws(Failure) -> ControlResponse {
        do {
            let c = try ControlConnection.connect(path: socket, timeoutSeconds: 5)
            try c.send(try ControlProtocol.encode(ControlRequest.handover(step)))
            return try ControlProtocol.decode(ControlResponse.self, from: try c.receiveMessage(limit: ControlProtocol.maxResponse))
        } catch {
            throw Failure(description: "\(socket): \(error)")
        }
    }
}

/// Runs `body` on a thread of its own after `seconds`.
func after(_ seconds: Double, _ body: @escaping @Sendable () -> Void) {
    OSThread.detached(name: "lvsd-handover") {
        usleep(useconds_t(seconds * 1_000_000))
        body()
    }
}
