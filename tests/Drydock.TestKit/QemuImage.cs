using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace Drydock.TestKit;

/// <summary>Image format names as qemu tools spell them.</summary>
public static class ImageFormat
{
    /// <summary>A plain file, byte for byte the disk; holes in the file are holes in the disk.</summary>
    public const string Raw = "raw";

    /// <summary>QEMU copy-on-write v2, with persistent dirty bitmaps.</summary>
    public const string Qcow2 = "qcow2";
}

/// <summary>
/// Makes and changes disk images offline with <c>qemu-img</c> and <c>qemu-io</c>, and writes data files
/// (dense random, sparse, allocated zeros) directly. Sizes and offsets are in bytes.
/// </summary>
public static class QemuImage
{
    private const int WriteBufferSize = 1 << 20;

    /// <summary><c>qemu-img create -f FORMAT PATH SIZE</c>.</summary>
    /// <returns><paramref name="path"/>.</returns>
    public static async Task<string> CreateAsync(string path, string format, long size, CancellationToken cancellationToken = default)
    {
        await ProcessRunner.RunAsync("qemu-img", ["create", "-q", "-f", format, path, Invariant(size)], cancellationToken);
        return path;
    }

    /// <summary>An empty qcow2 image of <paramref name="size"/> bytes.</summary>
    public static Task<string> CreateQcow2Async(string path, long size, CancellationToken cancellationToken = default) =>
        CreateAsync(path, ImageFormat.Qcow2, size, cancellationToken);

    /// <summary>An empty (fully sparse) raw image of <paramref name="size"/> bytes.</summary>
    public static Task<string> CreateRawAsync(string path, long size, CancellationToken cancellationToken = default) =>
        CreateAsync(path, ImageFormat.Raw, size, cancellationToken);

    /// <summary>Runs qemu-io commands on an image (offline: nothing else may hold it).</summary>
    public static Task<ProcessResult> QemuIoAsync(string path, string format, IReadOnlyList<string> commands, CancellationToken cancellationToken = default) =>
        NbdTools.QemuIoAsync(path, format, commands, cancellationToken: cancellationToken);

    /// <summary>Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/> (<c>write -P</c>).</summary>
    public static Task<ProcessResult> WritePatternAsync(string path, string format, long offset, long length, byte pattern, CancellationToken cancellationToken = default) =>
        QemuIoAsync(path, format, [string.Create(CultureInfo.InvariantCulture, $"write -P 0x{pattern:x2} {offset} {length}")], cancellationToken);

    /// <summary>Writes zeros (<c>write -z</c>, or with <paramref name="unmap"/> <c>write -z -u</c> to allow holes).</summary>
    public static Task<ProcessResult> WriteZeroesAsync(string path, string format, long offset, long length, bool unmap = false, CancellationToken cancellationToken = default) =>
        QemuIoAsync(path, format, [string.Create(CultureInfo.InvariantCulture, $"write -z {(unmap ? "-u " : string.Empty)}{offset} {length}")], cancellationToken);

    /// <summary>Discards a range (<c>discard</c>).</summary>
    public static Task<ProcessResult> DiscardAsync(string path, string format, long offset, long length, CancellationToken cancellationToken = default) =>
        QemuIoAsync(path, format, [string.Create(CultureInfo.InvariantCulture, $"discard {offset} {length}")], cancellationToken);

    /// <summary>
    /// Adds a persistent dirty bitmap to a qcow2 image (<c>qemu-img bitmap --add</c>). Offline writes with
    /// qemu-io are recorded in enabled bitmaps.
    /// </summary>
    /// <param name="path">The qcow2 image.</param>
    /// <param name="name">Bitmap name.</param>
    /// <param name="granularity">Bytes per bit (a power of two); default: qemu's (64 KiB).</param>
    /// <param name="disabled">Create it disabled (recording nothing).</param>
    /// <param name="cancellationToken">Cancels the command.</param>
    public static Task<ProcessResult> AddBitmapAsync(string path, string name, long? granularity = null, bool disabled = false, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "bitmap", "-f", ImageFormat.Qcow2, "--add" };
        if (granularity is { } g)
        {
            arguments.AddRange(["-g", Invariant(g)]);
        }

        if (disabled)
        {
            arguments.Add("--disable");
        }

        arguments.AddRange([path, name]);
        return ProcessRunner.RunAsync("qemu-img", arguments, cancellationToken);
    }

    /// <summary>Removes a persistent bitmap (<c>qemu-img bitmap --remove</c>).</summary>
    public static Task<ProcessResult> RemoveBitmapAsync(string path, string name, CancellationToken cancellationToken = default) =>
        ProcessRunner.RunAsync("qemu-img", ["bitmap", "-f", ImageFormat.Qcow2, "--remove", path, name], cancellationToken);

    /// <summary>Clears a persistent bitmap (<c>qemu-img bitmap --clear</c>).</summary>
    public static Task<ProcessResult> ClearBitmapAsync(string path, string name, CancellationToken cancellationToken = default) =>
        ProcessRunner.RunAsync("qemu-img", ["bitmap", "-f", ImageFormat.Qcow2, "--clear", path, name], cancellationToken);

    /// <summary>Enables or disables a persistent bitmap (<c>qemu-img bitmap --enable/--disable</c>).</summary>
    public static Task<ProcessResult> SetBitmapEnabledAsync(string path, string name, bool enabled, CancellationToken cancellationToken = default) =>
        ProcessRunner.RunAsync("qemu-img", ["bitmap", "-f", ImageFormat.Qcow2, enabled ? "--enable" : "--disable", path, name], cancellationToken);

    /// <summary>The persistent bitmaps of a qcow2 image (from <c>qemu-img info</c>).</summary>
    public static async Task<IReadOnlyList<QemuBitmapInfo>> ListBitmapsAsync(string path, CancellationToken cancellationToken = default) =>
        (await NbdTools.ImageInfoAsync(path, ImageFormat.Qcow2, cancellationToken: cancellationToken)).Bitmaps;

    /// <summary>
    /// A dense raw image of <paramref name="size"/> bytes of incompressible <see cref="TestData"/> for
    /// <paramref name="seed"/> (every block allocated): the byte at offset p is <c>TestData.ByteAt(p, seed)</c>.
    /// </summary>
    /// <returns><paramref name="path"/>.</returns>
    public static async Task<string> CreateRandomRawAsync(string path, long size, ulong seed = 1, CancellationToken cancellationToken = default)
    {
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.Read, FileOptions.Asynchronous);
        await WriteStreamAsync(file, 0, size, seed, cancellationToken);
        return path;
    }

    /// <summary>
    /// A raw image of <paramref name="size"/> bytes where about <paramref name="dataFraction"/> of the
    /// <paramref name="chunkSize"/> chunks (chosen by <paramref name="seed"/>) hold <see cref="TestData"/> and the
    /// rest are file-system holes. The data at offset p is <c>TestData.ByteAt(p, seed)</c>.
    /// </summary>
    /// <returns>The data extents, sorted and merged.</returns>
    public static async Task<IReadOnlyList<(long Offset, long Length)>> CreateSparseRawAsync(
        string path,
        long size,
        double dataFraction,
        ulong seed = 1,
        int chunkSize = 64 * 1024,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(dataFraction);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(dataFraction, 1.0);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkSize);
        if (size % chunkSize != 0)
        {
            throw new ArgumentException("The size must be a multiple of the chunk size.", nameof(size));
        }

        var chunks = size / chunkSize;
        var wanted = (long)Math.Round(chunks * dataFraction);
        var random = new Random(unchecked((int)seed));
        var chosen = new SortedSet<long>();
        while (chosen.Count < wanted)
        {
            chosen.Add(random.NextInt64(chunks));
        }

        var extents = new List<(long Offset, long Length)>();
        foreach (var chunk in chosen)
        {
            var offset = chunk * chunkSize;
            if (extents.Count > 0 && extents[^1].Offset + extents[^1].Length == offset)
            {
                extents[^1] = (extents[^1].Offset, extents[^1].Length + chunkSize);
            }
            else
            {
                extents.Add((offset, chunkSize));
            }
        }

        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.Read, FileOptions.Asynchronous);
        RandomAccess.SetLength(file, size);
        foreach (var (offset, length) in extents)
        {
            await WriteStreamAsync(file, offset, length, seed, cancellationToken);
        }

        return extents;
    }

    /// <summary>
    /// A raw image of <paramref name="size"/> bytes of zeros that are really written (allocated, not
    /// holes): the case where a reader cannot skip anything by extents.
    /// </summary>
    /// <returns><paramref name="path"/>.</returns>
    public static async Task<string> CreateAllocatedZeroRawAsync(string path, long size, CancellationToken cancellationToken = default)
    {
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.Read, FileOptions.Asynchronous);
        var zeros = new byte[(int)Math.Min(WriteBufferSize, Math.Max(size, 1))];
        for (long offset = 0; offset < size; offset += zeros.Length)
        {
            var count = (int)Math.Min(zeros.Length, size - offset);
            await RandomAccess.WriteAsync(file, zeros.AsMemory(0, count), offset, cancellationToken);
        }

        return path;
    }

    /// <summary>
    /// A qcow2 image of <paramref name="size"/> bytes whose every cluster is allocated and holds zeros
    /// (<c>qemu-io write -P 0</c>, which allocates, unlike <c>write -z</c>).
    /// </summary>
    /// <returns><paramref name="path"/>.</returns>
    public static async Task<string> CreateAllocatedZeroQcow2Async(string path, long size, CancellationToken cancellationToken = default)
    {
        await CreateQcow2Async(path, size, cancellationToken);
        await WritePatternAsync(path, ImageFormat.Qcow2, 0, size, 0, cancellationToken);
        return path;
    }

    /// <summary>Converts an image (<c>qemu-img convert</c>), e.g. a random raw file into qcow2.</summary>
    /// <returns><paramref name="destination"/>.</returns>
    public static async Task<string> ConvertAsync(string source, string sourceFormat, string destination, string destinationFormat, CancellationToken cancellationToken = default)
    {
        await NbdTools.ConvertAsync(source, sourceFormat, destination, destinationFormat, cancellationToken);
        return destination;
    }

    private static async Task WriteStreamAsync(SafeFileHandle file, long offset, long length, ulong seed, CancellationToken cancellationToken)
    {
        var buffer = new byte[(int)Math.Min(WriteBufferSize, Math.Max(length, 1))];
        for (long done = 0; done < length;)
        {
            var count = (int)Math.Min(buffer.Length, length - done);
            TestData.Fill(buffer.AsSpan(0, count), offset + done, seed);
            await RandomAccess.WriteAsync(file, buffer.AsMemory(0, count), offset + done, cancellationToken);
            done += count;
        }
    }

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);
}
