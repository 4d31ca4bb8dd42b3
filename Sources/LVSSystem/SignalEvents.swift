import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// Signals as an async sequence of their numbers. Their default action
/// (which for SIGTERM, SIGINT and SIGHUP ends the process) is replaced at
/// once, before any thread that might take one is started, so that a
/// signal arriving while the process starts up is waited for, not fatal.
/// (swift-service-lifecycle's UnixSignalsSequence left lvsd's signals
/// deliverable to threads with the default action while it registered,
/// and its sequence could end by itself; measured: 2 starts in 3 lost it.)
public final class SignalEvents: AsyncSequence, Sendable {
    public typealias Element = Int32
    let stream: AsyncStream<Int32>
    nonisolated(unsafe) let sources: [any DispatchSourceSignal]  // set once here, cancelled in deinit

    public init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        self.stream = stream
        unsafe sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "lvs.signals"))
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    // Nothing else touches `sources` once the instance is going.
    deinit { for s in unsafe sources { s.cancel() } }

    public func makeAsyncIterator() -> AsyncStream<Int32>.AsyncIterator { stream.makeAsyncIterator() }
}
