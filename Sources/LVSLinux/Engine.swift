import LVSCore
import Synchronization

/// One worker's engine: its `Director`, locked by the worker once per batch
/// and by the control plane to configure it or read its counters.
public final class Engine: Sendable {
    public let director: Mutex<Director>
    public init(_ director: Director) { self.director = Mutex(director) }
}
