using Xunit;

namespace Drydock.Hypervisor.Tests.Model;

public sealed class DrydockNamesTests
{
    [Fact]
    public void New_checkpoint_names_are_owned_valid_and_sort_by_time()
    {
        var earlier = DrydockNames.NewCheckpointName(new DateTimeOffset(2025, 1, 2, 3, 4, 5, TimeSpan.FromHours(2)));
        var later = DrydockNames.NewCheckpointName(new DateTimeOffset(2025, 1, 2, 3, 4, 6, TimeSpan.FromHours(2)));

        Assert.StartsWith("drydock-20250102T010405Z-", earlier, StringComparison.Ordinal);
        Assert.True(DrydockNames.IsOwned(earlier));
        DrydockNames.ValidateOwnedCheckpoint("dom", earlier);
        Assert.True(string.CompareOrdinal(earlier, later) < 0);
    }

    [Fact]
    public void Chain_tags_are_carried_in_the_name_and_read_back()
    {
        var repository = Guid.Parse("9f8e7d6c-0000-4000-8000-000000000001");
        var tag = DrydockNames.ChainTag(repository);
        var name = DrydockNames.NewCheckpointName(new DateTimeOffset(2025, 1, 2, 3, 4, 5, TimeSpan.Zero), tag);

        Assert.Equal("9f8e7d6c", tag);
        Assert.StartsWith("drydock-20250102T030405Z-9f8e7d6c-", name, StringComparison.Ordinal);
        DrydockNames.ValidateOwnedCheckpoint("dom", name);
        Assert.Equal(tag, DrydockNames.ChainTagOf(name));
        Assert.Null(DrydockNames.ChainTagOf("drydock-20250102T030405Z-1a2b3c4d"));
        Assert.Null(DrydockNames.ChainTagOf("drydock-f15-1"));
        Assert.Null(DrydockNames.ChainTagOf("virtnbdbackup.0"));
        Assert.Null(DrydockNames.ChainTagOf("drydock-20250102T030405Z-NOTAHEX1-1a2b3c4d"));
        Assert.Throws<ArgumentException>(() => DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch, "x/y"));
    }

    [Fact]
    public void Foreign_names_are_refused_by_name()
    {
        var ex = Assert.Throws<ForeignCheckpointException>(() => DrydockNames.ValidateOwnedCheckpoint("dom-1", "virtnbdbackup.0"));
        Assert.Equal("virtnbdbackup.0", ex.Checkpoint);
        Assert.Equal("dom-1", ex.DomainId);
        Assert.Contains("left alone", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("drydock-a/b")]
    [InlineData("drydock-a b")]
    [InlineData("drydock-ä")]
    [InlineData("drydock-a?x=1")]
    public void Names_that_could_escape_a_path_or_uri_are_refused(string name) =>
        Assert.Throws<ArgumentException>(() => DrydockNames.ValidateOwnedCheckpoint("dom", name));
}
