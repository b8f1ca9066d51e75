using System.Runtime.InteropServices;

[assembly: DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]

namespace Drydock.Storage.FileSystem.Interop;

/// <summary>The few libc calls the BCL does not expose: an atomic no-replace link, a directory fsync, and
/// O_DIRECT writes.</summary>
internal static partial class NativeMethods
{
    private const string LibC = "libc";

    /// <summary>O_RDONLY.</summary>
    internal const int ORdOnly = 0;

    /// <summary>O_DIRECTORY, which differs between architectures (on arm64 0x10000 is O_DIRECT); 0 where unknown, so a
    /// directory is opened plainly (O_RDONLY works on a directory; the flag only adds the check).</summary>
    internal static int ODirectory => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 0x10000,
        Architecture.Arm64 => 0x4000,
        _ => 0,
    };

    /// <summary>O_CLOEXEC on Linux.</summary>
    internal const int OCloExec = 0x80000;

    /// <summary>O_WRONLY.</summary>
    internal const int OWrOnly = 1;

    /// <summary>O_CREAT on Linux.</summary>
    internal const int OCreat = 0x40;

    /// <summary>O_EXCL on Linux.</summary>
    internal const int OExcl = 0x80;

    /// <summary>errno EINVAL.</summary>
    internal const int EInval = 22;

    /// <summary>errno EEXIST.</summary>
    internal const int EExist = 17;

    /// <summary>errno ENOSPC.</summary>
    internal const int ENoSpc = 28;

    /// <summary>errno EDQUOT.</summary>
    internal const int EDQuot = 122;

    /// <summary>errno EACCES.</summary>
    internal const int EAcces = 13;

    /// <summary>errno EPERM.</summary>
    internal const int EPerm = 1;

    /// <summary>errno EINTR.</summary>
    internal const int EIntr = 4;

    [LibraryImport(LibC, EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Link(string oldPath, string newPath);

    [LibraryImport(LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags);

    [LibraryImport(LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, int mode);

    [LibraryImport(LibC, EntryPoint = "pwrite", SetLastError = true)]
    internal static unsafe partial nint PWrite(int fd, byte* buffer, nint count, long offset);

    [LibraryImport(LibC, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int FTruncate(int fd, long length);

    [LibraryImport(LibC, EntryPoint = "fsync", SetLastError = true)]
    internal static partial int FSync(int fd);

    [LibraryImport(LibC, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    /// <summary>fsync(2) on a descriptor, retried on EINTR.</summary>
    /// <param name="fd">The descriptor.</param>
    /// <returns>0, or the errno of the failure.</returns>
    internal static int FSyncRetrying(int fd)
    {
        while (true)
        {
            if (FSync(fd) == 0)
            {
                return 0;
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno != EIntr)
            {
                return errno;
            }
        }
    }

    /// <summary>fsync(2) on an open file handle, retried on EINTR.</summary>
    /// <param name="handle">The handle.</param>
    /// <returns>0, or the errno of the failure.</returns>
    internal static int FSync(Microsoft.Win32.SafeHandles.SafeFileHandle handle)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return FSyncRetrying((int)handle.DangerousGetHandle());
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }
}
