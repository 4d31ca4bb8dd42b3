import CLVSLinux
import LVSSystem
import SystemPackage

/// A TUN device (IFF_TUN, no packet information): what is written to it
/// arrives in the kernel's stack as if received on the device.
public enum TUNDevice {
    /// Creates (or attaches to) the device `name`; its descriptor, which the caller closes.
    public static func open(_ name: String) throws(SystemError) -> FileDescriptor {
        // TUNSETIFF is an ioctl (variadic in C, not importable); the name is lent for the call.
        let rc = unsafe name.withCString { unsafe lvs_tun_open($0) }
        guard rc >= 0 else { throw SystemError("open TUN device \(name)", Errno(rawValue: -rc)) }
        return FileDescriptor(rawValue: rc)
    }
}
