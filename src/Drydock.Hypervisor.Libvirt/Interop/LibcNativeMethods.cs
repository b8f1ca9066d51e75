using System.Runtime.InteropServices;

namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>
/// The two libc calls the driver needs beside libvirt: <c>stat</c> (device and inode of a disk image, for disk
/// identity, FAULTS.md F10) and <c>kill</c> (SIGTERM to the qemu-nbd of a restore export, so that it flushes and
/// exits cleanly; .NET's <c>Process.Kill</c> only sends SIGKILL).
/// </summary>
internal static unsafe partial class LibcNativeMethods
{
    private const string Library = "libc";

    public const int SigTerm = 15;

    [LibraryImport(Library, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Stat(string path, byte* buffer);

    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    /// <summary>The device and inode of a file (the first two fields of <c>struct stat</c> on every 64-bit Linux ABI).</summary>
    /// <param name="path">The file.</param>
    /// <param name="device">Its device number.</param>
    /// <param name="inode">Its inode number.</param>
    /// <returns>False when the file cannot be stat'ed here (remote host, missing file).</returns>
    public static bool TryGetDeviceAndInode(string path, out ulong device, out ulong inode)
    {
        // struct stat is 144 bytes on x86_64 and 128 on aarch64; 256 covers both.
        var buffer = stackalloc byte[256];
        if (Stat(path, buffer) != 0)
        {
            device = 0;
            inode = 0;
            return false;
        }

        device = *(ulong*)buffer;
        inode = *(ulong*)(buffer + 8);
        return true;
    }
}
