using System.Runtime.InteropServices;

namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>
/// The libc calls the driver needs beside libvirt: <c>stat</c> (device and inode of a disk image, for disk
/// identity, FAULTS.md F10), <c>kill</c> (SIGTERM to the qemu-nbd of a restore export, so that it flushes and
/// exits cleanly; .NET's <c>Process.Kill</c> only sends SIGKILL), and <c>getpwnam</c> + <c>chown</c> (the NBD socket
/// directory belongs to QEMU's user, see <see cref="LibvirtWorkDirectories"/>).
/// </summary>
internal static unsafe partial class LibcNativeMethods
{
    private const string Library = "libc";

    public const int SigTerm = 15;

    [LibraryImport(Library, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Stat(string path, byte* buffer);

    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Library, EntryPoint = "getpwnam", StringMarshalling = StringMarshalling.Utf8)]
    private static partial byte* GetPasswordEntry(string name);

    [LibraryImport(Library, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Chown(string path, uint owner, uint group);

    /// <summary>The user id of a user name (<c>getpwnam</c>; call from one thread at a time, it returns a static buffer).</summary>
    /// <param name="name">The user name.</param>
    /// <param name="uid">Its id.</param>
    /// <returns>False when there is no such user.</returns>
    public static bool TryGetUserId(string name, out uint uid)
    {
        var entry = GetPasswordEntry(name);
        if (entry is null)
        {
            uid = 0;
            return false;
        }

        // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; ... } on every 64-bit Linux ABI.
        uid = *(uint*)(entry + (2 * sizeof(nint)));
        return true;
    }

    /// <summary>Gives a file or directory to another owner, keeping its group.</summary>
    /// <param name="path">The file or directory.</param>
    /// <param name="uid">The new owner.</param>
    /// <exception cref="IOException">chown failed; the message has the reason.</exception>
    public static void ChangeOwner(string path, uint uid)
    {
        if (Chown(path, uid, uint.MaxValue) != 0)
        {
            throw new IOException($"chown {path}: {Marshal.GetLastPInvokeErrorMessage()}");
        }
    }

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
