using System.Globalization;
using System.Text;
using Drydock.TestKit;

namespace Drydock.Benchmarks.Transfer;

/// <summary>The disk images of the transfer benchmarks, made once per work directory and reused while their size fits.</summary>
internal static class BenchImages
{
    public const int MiB = 1024 * 1024;

    /// <summary>Incompressible: the seeded <see cref="TestData"/> stream, every byte written.</summary>
    public static async Task<string> RandomAsync(string directory, long size, CancellationToken cancellationToken)
    {
        var path = Path.Combine(directory, "random.raw");
        if (Fits(path, size))
        {
            return path;
        }

        await using (var file = new FileStream(path + ".partial", FileMode.Create, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous))
        {
            var buffer = new byte[8 * MiB];
            for (long at = 0; at < size; at += buffer.Length)
            {
                TestData.Fill(buffer, at, seed: 2026);
                await file.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, size - at)), cancellationToken);
            }
        }

        File.Move(path + ".partial", path, overwrite: true);
        return path;
    }

    /// <summary>
    /// "Mixed": per 1 MiB block, seeded: 40 % random bytes, 30 % text-like (log lines, partly repeating), 15 % written
    /// zeros, 15 % never written (holes in the sparse file).
    /// </summary>
    public static async Task<string> MixedAsync(string directory, long size, CancellationToken cancellationToken)
    {
        var path = Path.Combine(directory, "mixed.raw");
        if (Fits(path, size))
        {
            return path;
        }

        await using (var file = new FileStream(path + ".partial", FileMode.Create, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous))
        {
            await WriteMixedAsync(file, size, cancellationToken);
        }

        File.Move(path + ".partial", path, overwrite: true);
        return path;
    }

    private static async Task WriteMixedAsync(FileStream file, long size, CancellationToken cancellationToken)
    {
        file.SetLength(size);
        var random = new Random(20260601);
        var block = new byte[MiB];
        var words = "kernel: eth0 link up 1000Mbps full duplex systemd[1]: Started Session of user root. /usr/lib/x86_64-linux-gnu libc.so.6 GLIBC_2.36 ERROR WARN INFO connection from 10.0.0.17 port 5432 accepted config value=true timeout=30s".Split(' ');
        for (long at = 0; at < size; at += MiB)
        {
            var length = (int)Math.Min(MiB, size - at);
            var kind = random.Next(100);
            if (kind < 40)
            {
                TestData.Fill(block, at, seed: 77);
            }
            else if (kind < 70)
            {
                FillText(block, random, words);
            }
            else if (kind < 85)
            {
                Array.Clear(block);
            }
            else
            {
                continue; // a hole
            }

            await RandomAccess.WriteAsync(file.SafeFileHandle, block.AsMemory(0, length), at, cancellationToken);
        }
    }

    private static void FillText(byte[] block, Random random, string[] words)
    {
        // Log lines; every fourth line repeats the previous one (as logs do).
        var position = 0;
        byte[] line = [];
        while (position < block.Length)
        {
            if (line.Length == 0 || random.Next(4) != 0)
            {
                line = Encoding.ASCII.GetBytes(string.Create(
                    CultureInfo.InvariantCulture,
                    $"2026-06-01T{random.Next(24):D2}:{random.Next(60):D2}:{random.Next(60):D2} {words[random.Next(words.Length)]} {words[random.Next(words.Length)]} {words[random.Next(words.Length)]} {random.Next(100000)}\n"));
            }

            var n = Math.Min(line.Length, block.Length - position);
            line.AsSpan(0, n).CopyTo(block.AsSpan(position));
            position += n;
        }
    }

    private static bool Fits(string path, long size) => File.Exists(path) && new FileInfo(path).Length == size;
}
