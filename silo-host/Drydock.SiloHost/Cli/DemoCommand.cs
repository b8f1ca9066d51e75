using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using Drydock.Hypervisor.Sim;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// <c>drydock demo</c>, the README's "run" command until the cluster exists: the standalone backup job on the embedded
/// default, with no external service. A simulated host runs one domain with two disks and a deterministic guest;
/// the demo runs the real commands against it (<c>repo init</c>, <c>backup</c> full, incremental and differential with
/// guest writes, zeroes and trims in between, <c>points</c>, <c>restore --to</c> of every point, and a changed-blocks-only
/// <c>restore --into-domain</c>), and checks every restored disk byte for byte against the disk as it was at its backup.
/// </summary>
internal static class DemoCommand
{
    private const long MiB = 1024 * 1024;
    private const string HostName = "demo-host";
    private const string DomainName = "web-1";

    public static Command Build() => DemoScaffold.Create(
        "demo",
        "Back up a simulated domain (full, incremental, differential), restore every point and verify it.",
        256,
        "Size of the first simulated disk in MiB (the second is half).",
        "Keep the temporary directory (repository, restored images) for inspection.",
        RunAsync);

    private static async Task<int> RunAsync(string directory, long size, int seed, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var started = TimeProvider.System.GetTimestamp();
        await using var fleet = new SimFleet(new SimFleetOptions { Directory = Path.Combine(directory, "sim"), Seed = seed });
        var host = await fleet.AddHostAsync(HostName);
        var spec = new SimDomainSpec { Name = DomainName };
        spec.Disks.Add(new SimDiskSpec("vda", (ulong)size));
        spec.Disks.Add(new SimDiskSpec("vdb", (ulong)size / 2));
        var domain = await host.DefineAsync(spec, cancellationToken);
        await domain.StartAsync(cancellationToken: cancellationToken);
        await Say(output, $"simulated host {HostName}: domain {DomainName} ({domain.Id}) running, disks vda {Sizes.Human((ulong)size)}, vdb {Sizes.Human((ulong)size / 2)}");

        var passphraseFile = Path.Combine(directory, "passphrase");
        await File.WriteAllTextAsync(passphraseFile, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)) + "\n", cancellationToken);
        var repo = new Uri(Path.Combine(directory, "repo")).AbsoluteUri;
        var connectors = new HypervisorConnectors().Add(new SimConnector(fleet));
        string[] repoArgs = ["--repo", repo, "--passphrase-file", passphraseFile];

        async Task Drydock(params string[] args)
        {
            await Say(output, "$ drydock " + string.Join(' ', args.Select(a => a == repo ? "file://…/repo" : a == passphraseFile ? "…/passphrase" : a)));
            var code = await DrydockCli.RunAsync(args, output, error, () => connectors, cancellationToken);
            Check(code == ExitCodes.Success, $"'drydock {args[0]}' exited with {code}");
        }

        await Drydock("repo", "init", repo, "--passphrase-file", passphraseFile, "--kdf-iterations", "100000");

        // The guest fills part of its disks in runs of up to 1 MiB, then three backups with guest activity in between.
        var fill = new SimWorkload(seed, new SimWorkloadOptions { MaxBlocks = 256, ZeroWeight = 0, TrimWeight = 0 });
        var churn = new SimWorkload(seed + 1, new SimWorkloadOptions { MaxBlocks = 16 });
        var filled = await domain.RunWorkloadAsync(fill, (int)Math.Max(16, size / MiB / 4), cancellationToken);
        await Say(output, $"guest wrote {filled.Count} runs ({Sizes.Human(filled.Aggregate(0UL, (sum, op) => sum + op.Length))})");

        var expected = new List<Dictionary<string, byte[]>>();
        string[] levels = ["full", "inc", "diff"];
        for (var i = 0; i < levels.Length; i++)
        {
            if (i > 0)
            {
                var changed = await domain.RunWorkloadAsync(churn, 40, cancellationToken);
                await Say(output, $"guest changed {changed.Count} ranges: {changed.Count(c => c.Kind == SimGuestOperationKind.Write)} writes, {changed.Count(c => c.Kind == SimGuestOperationKind.Zero)} zeroes, {changed.Count(c => c.Kind == SimGuestOperationKind.Trim)} trims");
            }

            await Drydock(["backup", DomainName, "--hypervisor", "sim:" + HostName, "--level", levels[i], .. repoArgs]);

            // Nothing writes between the backup's capture and here, so the disks are what the point must hold.
            expected.Add(await HashDisksAsync(domain, cancellationToken));
        }

        await Drydock(["points", DomainName, .. repoArgs]);

        for (var point = 1; point <= expected.Count; point++)
        {
            var target = Path.Combine(directory, $"restore-{point}");
            await Drydock(["restore", DomainName, "--point", point.ToString(CultureInfo.InvariantCulture), "--to", target, .. repoArgs]);
            foreach (var (disk, hash) in expected[point - 1])
            {
                var restored = await HashFileAsync(Path.Combine(target, disk + ".raw"), cancellationToken);
                Check(restored.AsSpan().SequenceEqual(hash), $"point {point} disk {disk}: the restored image differs from the disk at its backup");
            }

            await Say(output, $"verify: point {point} restored byte-identical ({string.Join(", ", expected[point - 1].Select(e => $"{e.Key} {Convert.ToHexStringLower(e.Value)[..12]}…"))})");
        }

        // Quick rollback: the guest goes on, then the domain is stopped and rolled back to point 1, changed blocks only.
        await domain.RunWorkloadAsync(churn, 40, cancellationToken);
        await domain.DestroyAsync(cancellationToken);
        await Drydock(["restore", DomainName, "--point", "1", "--into-domain", "--changed-only", "--hypervisor", "sim:" + HostName, .. repoArgs]);
        var rolledBack = await HashDisksAsync(domain, cancellationToken);
        foreach (var (disk, hash) in expected[0])
        {
            Check(rolledBack[disk].AsSpan().SequenceEqual(hash), $"disk {disk} differs from point 1 after the changed-only restore");
        }

        await Say(output, "verify: the domain's disks equal point 1 after the changed-only restore");
        await Say(output, string.Create(CultureInfo.InvariantCulture, $"OK in {TimeProvider.System.GetElapsedTime(started).TotalSeconds:0.0} s: 3 points backed up, 3 restored and verified, 1 rollback in place"));
        return ExitCodes.Success;
    }

    private static async Task<Dictionary<string, byte[]>> HashDisksAsync(SimDomain domain, CancellationToken cancellationToken)
    {
        var hashes = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var buffer = new byte[MiB];
        foreach (var disk in domain.Disks)
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            for (ulong offset = 0; offset < disk.Size; offset += (ulong)buffer.Length)
            {
                var length = (int)Math.Min((ulong)buffer.Length, disk.Size - offset);
                await disk.ReadAsync(offset, buffer.AsMemory(0, length), cancellationToken);
                hash.AppendData(buffer, 0, length);
            }

            hashes[disk.Target] = hash.GetHashAndReset();
        }

        return hashes;
    }

    private static async Task<byte[]> HashFileAsync(string path, CancellationToken cancellationToken)
    {
        await using var file = File.OpenRead(path);
        return await SHA256.HashDataAsync(file, cancellationToken);
    }

    private static void Check(bool condition, string failure)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"demo verification failed: {failure}");
        }
    }

    private static Task Say(TextWriter output, string line) => output.WriteLineAsync(line);
}
