using System.Runtime.InteropServices;

namespace Drydock.Hypervisor.Qemu.Interop;

/// <summary>libc calls the driver needs and .NET does not expose: inode numbers and birth times, signals by pid.</summary>
internal static partial class NativeMethods
{
    internal const int AtFdCwd = -100;
    internal const uint StatxIno = 0x100;
    internal const uint StatxBtime = 0x800;
    internal const int SigKill = 9;
    internal const int SigTerm = 15;

    /// <summary>statx(2). <paramref name="buffer"/> must be 256 bytes.</summary>
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Statx(int dirFd, string path, int flags, uint mask, Span<byte> buffer);

    /// <summary>kill(2); signal 0 only probes whether the process exists.</summary>
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    internal static partial int Kill(int pid, int signal);
}
