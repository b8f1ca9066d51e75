namespace Drydock.Hypervisor.Sim;

/// <summary>What a guest operation does.</summary>
public enum SimGuestOperationKind
{
    /// <summary>Writes pseudo-random bytes (from <see cref="SimGuestOperation.DataSeed"/>).</summary>
    Write = 0,

    /// <summary>Writes zeroes.</summary>
    Zero = 1,

    /// <summary>Discards (reads back as zeroes).</summary>
    Trim = 2,
}

/// <summary>One guest operation; its data is reproducible from <see cref="DataSeed"/>.</summary>
/// <param name="Target">The disk.</param>
/// <param name="Kind">What it does.</param>
/// <param name="Offset">Where.</param>
/// <param name="Length">How much.</param>
/// <param name="DataSeed">The seed of the bytes written.</param>
public readonly record struct SimGuestOperation(string Target, SimGuestOperationKind Kind, ulong Offset, ulong Length, int DataSeed)
{
    /// <summary>The bytes a <see cref="SimGuestOperationKind.Write"/> writes (zeroes otherwise).</summary>
    /// <returns>The data.</returns>
    public byte[] Data()
    {
        var data = new byte[Length];
        if (Kind == SimGuestOperationKind.Write)
        {
#pragma warning disable CA5394 // Reproducible test data, not security.
            new Random(DataSeed).NextBytes(data);
#pragma warning restore CA5394
        }

        return data;
    }

    /// <summary>Applies the operation to a disk.</summary>
    /// <param name="disk">The disk.</param>
    /// <param name="cancellationToken">Cancels it.</param>
    /// <returns>A task.</returns>
    public ValueTask ApplyAsync(SimDisk disk, CancellationToken cancellationToken = default) => Kind switch
    {
        SimGuestOperationKind.Write => disk.WriteAsync(Offset, Data(), cancellationToken),
        SimGuestOperationKind.Zero => disk.WriteZeroesAsync(Offset, Length, cancellationToken),
        _ => disk.TrimAsync(Offset, Length, cancellationToken),
    };
}

/// <summary>Settings of a <see cref="SimWorkload"/>.</summary>
public sealed record SimWorkloadOptions
{
    /// <summary>Relative weight of writes. Default 8.</summary>
    public int WriteWeight { get; init; } = 8;

    /// <summary>Relative weight of zeroing. Default 1.</summary>
    public int ZeroWeight { get; init; } = 1;

    /// <summary>Relative weight of trims. Default 1.</summary>
    public int TrimWeight { get; init; } = 1;

    /// <summary>Alignment and unit of offsets and lengths. Default 4 KiB.</summary>
    public ulong BlockSize { get; init; } = 4096;

    /// <summary>Longest operation, in blocks. Default 64 (256 KiB).</summary>
    public int MaxBlocks { get; init; } = 64;
}

/// <summary>
/// A deterministic guest: from one seed, the same sequence of writes, zeroes and trims over a domain's disks, every
/// time. Each call to <see cref="Next"/> continues the sequence.
/// </summary>
public sealed class SimWorkload
{
    private readonly Random _random;
    private readonly SimWorkloadOptions _options;

    /// <summary>Creates the generator.</summary>
    /// <param name="seed">The seed.</param>
    /// <param name="options">Weights and sizes, or null for defaults.</param>
    public SimWorkload(int seed, SimWorkloadOptions? options = null)
    {
#pragma warning disable CA5394 // Reproducible test data, not security.
        _random = new Random(seed);
#pragma warning restore CA5394
        _options = options ?? new SimWorkloadOptions();
    }

    /// <summary>The next <paramref name="count"/> operations for the disks of <paramref name="domain"/>.</summary>
    /// <param name="domain">The domain (its disk targets and sizes).</param>
    /// <param name="count">How many.</param>
    /// <returns>The operations.</returns>
    public IReadOnlyList<SimGuestOperation> Next(SimDomain domain, int count)
    {
        var operations = new List<SimGuestOperation>(count);
        var total = _options.WriteWeight + _options.ZeroWeight + _options.TrimWeight;
        for (var i = 0; i < count; i++)
        {
#pragma warning disable CA5394 // Reproducible test data, not security.
            var disk = domain.Disks[_random.Next(domain.Disks.Count)];
            var blocks = disk.Size / _options.BlockSize;
            var length = (ulong)_random.Next(1, _options.MaxBlocks + 1);
            length = Math.Min(length, blocks);
            var offset = (ulong)_random.NextInt64(0, (long)(blocks - length + 1)) * _options.BlockSize;
            var pick = _random.Next(total);
            var kind = pick < _options.WriteWeight ? SimGuestOperationKind.Write
                : pick < _options.WriteWeight + _options.ZeroWeight ? SimGuestOperationKind.Zero
                : SimGuestOperationKind.Trim;
            operations.Add(new SimGuestOperation(disk.Target, kind, offset, length * _options.BlockSize, _random.Next()));
#pragma warning restore CA5394
        }

        return operations;
    }
}
