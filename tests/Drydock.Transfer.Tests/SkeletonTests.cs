using Xunit;

namespace Drydock.Transfer.Tests;

public sealed class TransferProgressTests
{
    [Fact]
    public void Rate_and_eta_follow_from_bytes_and_elapsed_time()
    {
        var p = new TransferProgress { Disk = "vda", Phase = TransferPhase.Transferring, TotalBytes = 300, DoneBytes = 100, Elapsed = TimeSpan.FromSeconds(2) };
        Assert.Equal(50, p.BytesPerSecond);
        Assert.Equal(TimeSpan.FromSeconds(4), p.Eta);
        Assert.Null((p with { DoneBytes = 0 }).Eta);
    }
}
