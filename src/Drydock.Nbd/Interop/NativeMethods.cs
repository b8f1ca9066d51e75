using System.Runtime.InteropServices;

namespace Drydock.Nbd.Interop;

/// <summary>
/// The few libc calls .NET does not offer: <c>lseek</c> with SEEK_DATA / SEEK_HOLE to find a sparse file's
/// allocation and <c>fallocate</c> to punch holes (the file backend), and <c>socketpair</c> for in-process
/// connections. Linux only; callers wrap them (see <see cref="Server.NbdFileBackend"/>,
/// <see cref="Server.SocketPair"/>) and fall back when the file system says no.
/// </summary>
internal static partial class NativeMethods
{
    /// <summary>lseek whence: the next offset at or after the given one that holds data.</summary>
    public const int SeekData = 3;

    /// <summary>lseek whence: the next offset at or after the given one that is in a hole (EOF counts as one).</summary>
    public const int SeekHole = 4;

    /// <summary>fallocate mode: do not change the file size.</summary>
    public const int FallocKeepSize = 0x01;

    /// <summary>fallocate mode: deallocate the range (it then reads as zeroes); needs <see cref="FallocKeepSize"/>.</summary>
    public const int FallocPunchHole = 0x02;

    /// <summary>errno: no data at or after the offset (SEEK_DATA past the last data).</summary>
    public const int ENXIO = 6;

    /// <summary>socket domain: Unix.</summary>
    public const int AfUnix = 1;

    /// <summary>socket type: stream.</summary>
    public const int SockStream = 1;

    /// <summary>socket type flag: close on exec.</summary>
    public const int SockCloexec = 0x80000;

    private const string Libc = "libc";

    /// <summary><c>int socketpair(int domain, int type, int protocol, int sv[2])</c>.</summary>
    [LibraryImport(Libc, EntryPoint = "socketpair", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static unsafe partial int SocketPair(int domain, int type, int protocol, int* descriptors);

    /// <summary><c>off_t lseek(int fd, off_t offset, int whence)</c>.</summary>
    [LibraryImport(Libc, EntryPoint = "lseek", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial long LSeek(int fd, long offset, int whence);

    /// <summary><c>int fallocate(int fd, int mode, off_t offset, off_t len)</c>.</summary>
    [LibraryImport(Libc, EntryPoint = "fallocate", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int FAllocate(int fd, int mode, long offset, long length);
}
