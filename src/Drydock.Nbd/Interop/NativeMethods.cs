using System.Runtime.InteropServices;

namespace Drydock.Nbd.Interop;

/// <summary>
/// The few libc calls the file backend needs and .NET does not offer: <c>lseek</c> with SEEK_DATA /
/// SEEK_HOLE to find a sparse file's allocation, and <c>fallocate</c> to punch holes. Linux only; callers
/// wrap them (see <see cref="Server.NbdFileBackend"/>) and fall back when the file system says no.
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

    private const string Libc = "libc";

    /// <summary><c>off_t lseek(int fd, off_t offset, int whence)</c>.</summary>
    [LibraryImport(Libc, EntryPoint = "lseek", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial long LSeek(int fd, long offset, int whence);

    /// <summary><c>int fallocate(int fd, int mode, off_t offset, off_t len)</c>.</summary>
    [LibraryImport(Libc, EntryPoint = "fallocate", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int FAllocate(int fd, int mode, long offset, long length);
}
