using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Drydock.Repository.Interop;

namespace Drydock.Repository.Compression;

/// <summary>A zstd compression context (<c>ZSTD_CCtx</c>), freed on dispose.</summary>
internal sealed class ZstdCompressionContext : SafeHandle
{
    public ZstdCompressionContext()
        : base(0, ownsHandle: true)
    {
        SetHandle(NativeMethods.ZstdCreateCCtx());
        if (IsInvalid)
        {
            throw new InvalidOperationException("ZSTD_createCCtx failed");
        }
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        NativeMethods.ZstdFreeCCtx(handle);
        return true;
    }
}

/// <summary>A zstd decompression context (<c>ZSTD_DCtx</c>), freed on dispose.</summary>
internal sealed class ZstdDecompressionContext : SafeHandle
{
    public ZstdDecompressionContext()
        : base(0, ownsHandle: true)
    {
        SetHandle(NativeMethods.ZstdCreateDCtx());
        if (IsInvalid)
        {
            throw new InvalidOperationException("ZSTD_createDCtx failed");
        }
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        NativeMethods.ZstdFreeDCtx(handle);
        return true;
    }
}

/// <summary>libzstd through <see cref="NativeMethods"/>, with pooled contexts (creating one per chunk is costly).</summary>
internal static class Zstd
{
    private static readonly ConcurrentBag<ZstdCompressionContext> Compressors = [];
    private static readonly ConcurrentBag<ZstdDecompressionContext> Decompressors = [];
    private static readonly Lazy<bool> Available = new(Probe);

    /// <summary>Whether libzstd.so.1 loads on this machine.</summary>
    public static bool IsAvailable => Available.Value;

    /// <summary>The worst-case compressed size of <paramref name="length"/> bytes.</summary>
    public static int CompressBound(int length) => checked((int)NativeMethods.ZstdCompressBound((nuint)length));

    /// <summary>Compresses into <paramref name="destination"/>; returns the size, or -1 if it does not fit.</summary>
    public static unsafe int Compress(ReadOnlySpan<byte> source, Span<byte> destination, int level)
    {
        if (!Compressors.TryTake(out var context))
        {
            context = new ZstdCompressionContext();
        }

        try
        {
            nuint result;
            fixed (byte* src = source)
            fixed (byte* dst = destination)
            {
                result = NativeMethods.ZstdCompressCCtx(context.DangerousGetHandle(), dst, (nuint)destination.Length, src, (nuint)source.Length, level);
            }

            return NativeMethods.ZstdIsError(result) != 0 ? -1 : (int)result;
        }
        finally
        {
            Compressors.Add(context);
        }
    }

    /// <summary>Decompresses; returns the size, or a zstd error name.</summary>
    public static unsafe (int Written, string? Error) Decompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        if (!Decompressors.TryTake(out var context))
        {
            context = new ZstdDecompressionContext();
        }

        try
        {
            nuint result;
            fixed (byte* src = source)
            fixed (byte* dst = destination)
            {
                result = NativeMethods.ZstdDecompressDCtx(context.DangerousGetHandle(), dst, (nuint)destination.Length, src, (nuint)source.Length);
            }

            if (NativeMethods.ZstdIsError(result) != 0)
            {
                return (-1, Marshal.PtrToStringAnsi(NativeMethods.ZstdGetErrorName(result)) ?? "unknown zstd error");
            }

            return ((int)result, null);
        }
        finally
        {
            Decompressors.Add(context);
        }
    }

    private static bool Probe()
    {
        if (Environment.GetEnvironmentVariable("DRYDOCK_DISABLE_ZSTD") == "1")
        {
            return false;
        }

        try
        {
            return NativeMethods.ZstdVersionNumber() >= 10000;
        }
        catch (DllNotFoundException)
        {
            return false;
        }
        catch (EntryPointNotFoundException)
        {
            return false;
        }
    }
}
