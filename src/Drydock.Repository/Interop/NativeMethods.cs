using System.Runtime.InteropServices;

[assembly: DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]

namespace Drydock.Repository.Interop;

/// <summary>libzstd (Debian <c>libzstd1</c>): the one-shot context API, which is stable since zstd 1.0.</summary>
internal static partial class NativeMethods
{
    /// <summary>The library name the loader resolves.</summary>
    internal const string LibZstd = "libzstd.so.1";

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_createCCtx")]
    internal static partial nint ZstdCreateCCtx();

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_freeCCtx")]
    internal static partial nuint ZstdFreeCCtx(nint cctx);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_createDCtx")]
    internal static partial nint ZstdCreateDCtx();

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_freeDCtx")]
    internal static partial nuint ZstdFreeDCtx(nint dctx);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_compressCCtx")]
    internal static unsafe partial nuint ZstdCompressCCtx(nint cctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize, int compressionLevel);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_decompressDCtx")]
    internal static unsafe partial nuint ZstdDecompressDCtx(nint dctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_compressBound")]
    internal static partial nuint ZstdCompressBound(nuint srcSize);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_isError")]
    internal static partial uint ZstdIsError(nuint code);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_getErrorName")]
    internal static partial nint ZstdGetErrorName(nuint code);

    [LibraryImport(LibZstd, EntryPoint = "ZSTD_versionNumber")]
    internal static partial uint ZstdVersionNumber();
}
