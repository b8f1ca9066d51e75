using System.Runtime.InteropServices;
using Drydock.Storage;
using Microsoft.Win32.SafeHandles;

[assembly: DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]

namespace Drydock.Transfer.Interop;

/// <summary>The libc call the BCL does not expose: opening a file with O_DIRECT (restores to a local raw image).</summary>
internal static partial class NativeMethods
{
    private const string LibC = "libc";
    private const int OWrOnly = 1;
    private const int OCloExec = 0x80000;

    /// <summary>Opens an existing file for O_DIRECT writes, or returns <see langword="null"/> where the architecture's
    /// O_DIRECT is unknown or the filesystem refuses it (the caller writes buffered).</summary>
    /// <param name="path">The file.</param>
    /// <returns>The handle, or null.</returns>
    internal static SafeFileHandle? TryOpenDirect(string path)
    {
        var direct = DirectIo.OpenFlag;
        if (direct == 0)
        {
            return null;
        }

        var fd = Open(path, OWrOnly | OCloExec | direct);
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    [LibraryImport(LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);
}
