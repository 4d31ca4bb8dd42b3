#if canImport(Glibc)
import Glibc
#endif

/// A thread of its own, for work that must never share one: the data
/// plane's workers, which run to completion over their rings and sleep in
/// poll. Everything else in lvsd runs on its event loops and tasks.
public final class OSThread: @unchecked Sendable {  // `handle` is written once, before anyone else sees it
    var handle = pthread_t()

    /// Starts `body` on a new thread named `name` (at most 15 bytes show).
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        let box = unsafe Unmanaged.passRetained(Box(body: body, name: name))
        // The box is retained for the thread, which takes it back (and releases it) first thing.
        let rc = unsafe pthread_create(
            &handle, nil,
            { argument in
                let box = unsafe Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
                OSThread.nameCurrentThread(box.name)
                box.body()
                return nil
            }, unsafe box.toOpaque())
        precondition(rc == 0, "pthread_create: \(rc)")
    }

    /// Glibc's pthread_setname_np is not imported; the kernel takes the
    /// same name through /proc, where `top -H` and `ps -L` read it.
    static func nameCurrentThread(_ name: String) {
        try? KernelFile.write("/proc/thread-self/comm", String(decoding: name.utf8.prefix(15), as: UTF8.self))
    }

    /// A thread nobody waits for: it runs until its body returns or the process ends.
    public static func detached(name: String, _ body: @escaping @Sendable () -> Void) {
        _ = pthread_detach(OSThread(name: name, body).handle)
    }

    /// Waits for the thread's end.
    public func join() { _ = pthread_join(handle, nil) }

    final class Box {
        let body: @Sendable () -> Void
        let name: String
        init(body: @escaping @Sendable () -> Void, name: String) {
            self.body = body
            self.name = name
        }
    }
}
