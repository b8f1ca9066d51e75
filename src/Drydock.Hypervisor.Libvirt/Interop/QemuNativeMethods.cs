using System.Runtime.InteropServices;

namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>
/// libvirt-qemu.so.0: the QEMU monitor pass-through. Used only to read dirty-bitmap state
/// (<c>query-named-block-nodes</c>), which libvirt 9.0 has no API for. Libvirt marks a domain "tainted: custom-monitor"
/// the first time this is called on it; the commands sent are read-only.
/// </summary>
internal static unsafe partial class QemuNativeMethods
{
    public const string Library = "libvirt-qemu.so.0";

    public const uint MonitorCommandDefault = 0;
    public const uint MonitorCommandHmp = 1 << 0;

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int virDomainQemuMonitorCommand(nint domain, string command, out byte* result, uint flags);
}
